"""The gRPC agent pool of ``meshlib demo``, beside the HTTP one.

The same scripted story as the HTTP agents (:class:`.scenario.Scenario`),
told by grpcio servers on 127.0.0.1: most agents are fast, one is ten times
slower, one starts answering ``UNAVAILABLE`` at 40% of the run, one goes hard
down (its server stops, so connections are refused) at 60%. A few client
threads call them through ``mesh.grpc_channel("grpc-agents")``. The service
retries ``UNAVAILABLE`` (``retry_on: connect-failure,refused-stream,unavailable``)
within its retry budget, and outlier detection ejects a failing agent after
three failures in a row (as the HTTP agents' service does), so callers should
see next to no errors.

:class:`GrpcPool` is started and stopped by :func:`meshlib.demo.run_demo`
(``grpc=True``, the ``meshlib demo`` default; ``--no-grpc`` leaves it out); it
adds a line per agent under the live table and a section to act 1's summary.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Mapping

import grpc

from ..errors import MeshError
from ..mesh import Mesh
from .scenario import DOWN, FAILING, FAST, SLOW, AgentSpec, Scenario, behaviour, mesh_state
from .summary import DEFAULT_WIDTH, fill, fitted, wrap

__all__ = ["GrpcPool", "GRPC_SERVICE", "GrpcAgentReport"]

GRPC_SERVICE = "grpc-agents"
METHOD = "/meshlib.demo.Agent/Work"
RETRY_ON = "connect-failure,refused-stream,unavailable"
#: Outlier detection as on the HTTP agents' service (see :data:`.run.RESILIENCE`).
OUTLIER = {"outlier_consecutive_5xx": 3, "outlier_base_ejection_time": "2s", "outlier_interval": "1s"}


class GrpcAgent:
    """One scripted grpcio agent on a free 127.0.0.1 port."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.origin = 0.0
        self.down_at: float | None = None
        self._rng = random.Random()
        self._executor = futures.ThreadPoolExecutor(8, thread_name_prefix=f"meshlib-demo-{spec.name}")
        self._server = grpc.server(self._executor)
        handler = grpc.unary_unary_rpc_method_handler(self._work)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("meshlib.demo.Agent", {"Work": handler}),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def start(self, origin: float) -> None:
        self.origin = origin
        self._server.start()

    def _work(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        spec = self.spec
        if spec.role == FAILING and spec.at is not None and time.monotonic() - self.origin >= spec.at:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is overloaded, try another agent")
        time.sleep(spec.latency * self._rng.uniform(0.8, 1.2))
        return self.name.encode()

    def behaviour(self, t: float) -> str:
        """The scripted state at ``t`` seconds, as the HTTP agents': up, slow, failing or down."""
        return behaviour(self.spec, self.down_at, t)

    def kill(self) -> None:
        """Go hard down: stop serving (calls in flight are cancelled), refuse connections."""
        if self.down_at is None:
            self.down_at = time.monotonic() - self.origin
        self._server.stop(None).wait(5)

    def stop(self) -> None:
        self._server.stop(None).wait(5)
        self._executor.shutdown(wait=True)


@dataclass(frozen=True)
class GrpcAgentReport:
    name: str
    role: str
    description: str
    address: str
    requests: int
    share: float
    failures: int
    refused: int
    state: str


class GrpcPool:
    """The gRPC agents of a scenario, their callers and what they saw."""

    def __init__(self, scenario: Scenario, concurrency: int = 2) -> None:
        self.scenario = scenario
        specs = [AgentSpec(f"grpc-{a.name}", a.role, a.latency, a.at) for a in scenario.agents]
        self.agents: list[GrpcAgent] = []
        try:
            for spec in specs:
                self.agents.append(GrpcAgent(spec))
        except BaseException:
            self.stop()
            raise
        self.concurrency = concurrency
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()
        self.calls = 0
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.origin = 0.0

    def services(self) -> dict[str, Any]:
        """The pool's service, for the demo's Mesh configuration."""
        return {GRPC_SERVICE: {"endpoints": [a.address for a in self.agents], **OUTLIER, "retry_on": RETRY_ON, "num_retries": 2}}

    def start(self, mesh: Mesh, origin: float) -> None:
        self.origin = origin
        for agent in self.agents:
            agent.start(origin)
        for agent in self.agents:
            if agent.spec.role == DOWN and agent.spec.at is not None:
                timer = threading.Timer(max(0.0, origin + agent.spec.at - time.monotonic()), agent.kill)
                timer.name = f"meshlib-demo-{agent.name}-down"
                timer.daemon = True
                self._timers.append(timer)
                timer.start()
        channel = mesh.grpc_channel(GRPC_SERVICE)
        for i in range(1, self.concurrency + 1):
            t = threading.Thread(target=self._client, args=(channel,), name=f"meshlib-demo-grpc-client-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def _client(self, channel: grpc.Channel) -> None:
        work = channel.unary_unary(METHOD)
        while not self._stop.is_set():
            try:
                work(b"", timeout=5.0)
            except grpc.RpcError as err:
                kind = "MeshError" if isinstance(err, MeshError) else err.code().name
                with self._lock:
                    self.calls += 1
                    self.errors[kind] += 1
                self._stop.wait(0.01)  # never spin on a hard error
                continue
            except MeshError as err:  # e.g. the Mesh closed under us
                with self._lock:
                    self.calls += 1
                    self.errors[type(err).__name__] += 1
                break
            with self._lock:
                self.calls += 1
                self.ok += 1

    def stop(self) -> None:
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        for t in self._threads:
            t.join(10.0)
        for agent in self.agents:
            agent.stop()

    # -- what it saw -------------------------------------------------------------

    def _endpoints(self, mesh: Mesh) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        service = mesh.stats()["services"][GRPC_SERVICE]
        return service, {ep["address"]: ep for ep in service["endpoints"]}

    def lines(self, mesh: Mesh, t: float) -> list[str]:
        """Lines for under the live table: one per gRPC agent."""
        service, eps = self._endpoints(mesh)
        with self._lock:
            calls, ok = self.calls, self.ok
        lines = [f'gRPC pool "{GRPC_SERVICE}": {calls} calls, {ok} ok, {service["retries"]} retried (retry_on {RETRY_ON})']
        for a in self.agents:
            ep = eps.get(a.address, {})
            lines.append(
                f"  {a.name:<14} reqs {int(ep.get('requests', 0)):>6}  share {float(ep.get('share', 0.0)) * 100:5.1f}%"
                f"  {a.behaviour(t):<8} meshlib: {mesh_state(ep)}"
            )
        return lines

    def reports(self, mesh: Mesh) -> list[GrpcAgentReport]:
        _, eps = self._endpoints(mesh)
        out = []
        for a in self.agents:
            ep = eps.get(a.address, {})
            refused = int(ep.get("connect_failures", 0))
            if a.spec.role == DOWN:
                description = "never went down" if a.down_at is None else f"down from t={a.down_at:.1f}s"
            elif a.spec.role == FAILING:
                description = f"UNAVAILABLE from t={a.spec.at:.1f}s"
            else:
                description = a.spec.describe()
            out.append(
                GrpcAgentReport(
                    a.name, a.spec.role, description, a.address, int(ep.get("requests", 0)), float(ep.get("share", 0.0)),
                    int(ep.get("failures", 0)) - refused, refused, mesh_state(ep),
                )
            )
        return out

    def summary(self, mesh: Mesh, width: int = DEFAULT_WIDTH) -> str:
        """Act 1's gRPC section of the summary, fitted to ``width``."""
        service, _ = self._endpoints(mesh)
        reports = self.reports(mesh)
        lines = ["", *wrap(f'Act 1, gRPC agent pool: service "{GRPC_SERVICE}" through mesh.grpc_channel(), {self.concurrency} client threads', width), ""]
        cells = [(r.name, r.description, r.address, str(r.requests), f"{r.share * 100:.1f}%", str(r.failures), str(r.refused), r.state) for r in reports]
        lines += fitted(("agent", "behaviour", "address", "requests", "share", "failed", "refused", "meshlib"), cells, "<<<>>>><", width, ("address",))
        with self._lock:
            calls, ok, errors = self.calls, self.ok, dict(self.errors)
        shown = ", ".join(f"{n} {kind}" for kind, n in sorted(errors.items())) or "no errors"
        lines.append("")
        lines += wrap(f"gRPC callers: {calls} calls, {ok} ok, {shown}.", width)
        lines += wrap(
            f"meshlib retried {service['retries']} attempts on another agent (UNAVAILABLE answers and refused connections; "
            f"budget refused {service['retries_budget_exhausted']}).",
            width,
        )
        for r in reports:
            if r.role == FAILING:
                how = "before outlier detection ejected it" if r.state == "ejected" else f"(still {r.state} at the end)"
                lines.append(fill(f"{r.name} ({r.description}) answered UNAVAILABLE {r.failures} times {how}.", width, "", "  "))
            if r.role == DOWN:
                ejected = ", and outlier detection ejected it" if r.state == "ejected" else ""
                lines.append(fill(f"{r.name} ({r.description}): {r.refused} refused connections, each retried on another agent{ejected}.", width, "", "  "))
            if r.role == SLOW:
                fast = [x.share for x in reports if x.role == FAST]
                avg = sum(fast) / len(fast) if fast else 0.0
                lines.append(fill(f"{r.name} ({r.description}) got {r.share * 100:.1f}% of the attempts, a fast agent {avg * 100:.1f}% on average.", width, "", "  "))
        return "\n".join(lines) + "\n"

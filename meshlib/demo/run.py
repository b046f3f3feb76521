"""``meshlib demo``: watch the balancer route around slow, failing and dead agents.

Everything runs in this process on 127.0.0.1, with no registry: a few
scripted HTTP agents (:mod:`.agents`), a :class:`~meshlib.Mesh` built
programmatically with one service, ``agents``, whose static endpoints are
those agents, and a few client threads calling ``http://agents/work`` through
``mesh.requests_session()`` as fast as they can (:mod:`.traffic`). A pool of
gRPC agents can run beside them (:mod:`.grpc_pool`), and a second act shows
a circuit breaker (:mod:`.breaker`).

While it runs, a per-agent table is shown (:mod:`.view`); at the end one
summary, in act order, says from this run's measurements what meshlib did.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence, TextIO

from ..mesh import Mesh
from .agents import Fleet
from .report import DemoResult, Phase, agent_reports, findings
from .scenario import DOWN, AgentSpec, Scenario
from .summary import DEFAULT_WIDTH, render_summary
from .table import collect_rows, render_status, render_table
from .traffic import SERVICE, CallLog, RecentShare, Traffic, by_address, service_stats
from .view import LiveView, terminal_width

if TYPE_CHECKING:
    from .grpc_pool import GrpcPool

__all__ = ["run_demo", "mesh_config", "RESILIENCE"]


#: The demo's resilience settings: retry what failed on another agent, eject
#: an agent after 3 errors in a row (Envoy's default is 5: peak_ewma already
#: sends a failing agent so little that a short run might not see five) for
#: 2 s (x its ejections), checked every second.
RESILIENCE = {
    "retry_on": "5xx,reset,connect-failure",
    "num_retries": 2,
    "outlier_consecutive_5xx": 3,
    "outlier_base_ejection_time": "2s",
    "outlier_interval": "1s",
}


def mesh_config(addresses: Sequence[str], lb_policy: str | None) -> dict[str, Any]:
    """The programmatic configuration: one static service, ``agents``."""
    service: dict[str, Any] = {"endpoints": list(addresses), **RESILIENCE}
    if lb_policy is not None:
        service["lb_policy"] = lb_policy
    return {"services": {SERVICE: service}}


class _Run:
    """One run's moving parts, and the main loop that scripts them."""

    def __init__(self, scenario: Scenario, fleet: Fleet, mesh: Mesh, view: LiveView, concurrency: int, extra: Callable[[float], list[str]] | None = None) -> None:
        self.extra = extra  # more lines under the table (the gRPC pool's)
        self.scenario = scenario
        self.fleet = fleet
        self.mesh = mesh
        self.view = view
        self.log = CallLog([a.name for a in fleet.agents])
        self.traffic = Traffic(mesh, concurrency, self.log)
        self.policy = str(service_stats(mesh)["policy"])
        self.recent = RecentShare(window=max(1.0, view.interval) if view.mode != "off" else 1.0)
        # meshlib's per-agent attempt counters at each phase boundary
        self.marks: list[tuple[str, str | None, float, dict[str, int]]] = []
        self.origin = 0.0
        self.last_draw: float | None = None  # when the view was last refreshed

    def now(self) -> float:
        return time.monotonic() - self.origin

    def mark(self, label: str, event: str | None) -> None:
        stats = by_address(service_stats(self.mesh))
        counts = {a.name: int(stats.get(a.address, {}).get("requests", 0)) for a in self.fleet.agents}
        self.marks.append((label, event, self.now(), counts))

    def start(self) -> None:
        self.origin = time.monotonic()
        self.fleet.start(self.origin)
        self.mark("all up", None)
        self.recent.update(0.0, {a.address: 0 for a in self.fleet.agents})
        self.traffic.start()

    def drive(self) -> bool:
        """Fire scripted events on time and refresh the view until the run
        is over; return True if Ctrl-C ended it early."""
        events = self.scenario.events()
        next_draw = 0.0 if self.view.live else self.view.interval
        try:
            while True:
                t = self.now()
                if t >= self.scenario.duration:
                    return False
                while events and t >= (events[0].at or 0.0):
                    self.fire(events.pop(0))
                if t >= next_draw:
                    self.draw(t)
                    next_draw = t + self.view.interval
                wake = min([self.scenario.duration, next_draw] + [e.at or 0.0 for e in events[:1]])
                time.sleep(min(max(0.0, wake - self.now()), 0.25))
        except KeyboardInterrupt:
            return True

    def fire(self, spec: AgentSpec) -> None:
        if spec.role == DOWN:
            self.mark(f"{spec.name} down", spec.name)
            self.fleet[spec.name].kill()
        else:  # the failing agent turns itself by the clock; just start a phase
            self.mark(f"{spec.name} 503s", spec.name)

    def draw(self, t: float) -> None:
        if self.view.mode == "off":
            return
        service = service_stats(self.mesh)
        stats = by_address(service)
        shares = self.recent.update(t, {a: int(s.get("requests", 0)) for a, s in stats.items()})
        rows = collect_rows(self.fleet, stats, self.log, t, shares)
        title, footer = render_status(t, self.scenario.duration, self.policy, self.log, service)
        if self.extra is not None:
            footer = [*footer, *self.extra(t)]
        self.view.show(title, render_table(rows, self.recent.window, self.view.width), footer, [r.state for r in rows])
        self.last_draw = t

    def stop(self) -> float:
        """Stop the callers; return the traffic's length in seconds."""
        self.traffic.stop()
        return self.now()

    def result(self, elapsed: float, interrupted: bool, concurrency: int) -> DemoResult:
        service = service_stats(self.mesh)
        self.mark("end", None)
        phases = [
            Phase(label, start, end, {n: after[n] - before[n] for n in after}, event)
            for (label, event, start, before), (_, _, end, after) in zip(self.marks, self.marks[1:])
        ]
        result = DemoResult(
            policy=self.policy,
            duration=self.scenario.duration,
            elapsed=elapsed,
            concurrency=concurrency,
            interrupted=interrupted,
            agents=agent_reports(self.fleet, by_address(service), self.log),
            phases=phases,
            total_calls=self.log.total,
            ok_calls=self.log.ok,
            errors=dict(self.log.errors),
            retries=int(service["retries"]),
            budget_refused=int(service["retries_budget_exhausted"]),
        )
        result.findings = findings(result)
        return result



def run_demo(
    duration: float = 12.0,
    *,
    agents: int = 5,
    concurrency: int = 4,
    lb_policy: str | None = None,
    out: TextIO | None = None,
    live: bool | None = None,
    breaker_act: bool = True,
    grpc: bool = False,
) -> DemoResult:
    """Run the scripted scenario for ``duration`` seconds and print a summary.

    ``live``: ``None`` redraws a table in place about 4 times a second when
    ``out`` is a terminal (with ``rich`` when it is installed) and prints one
    every 2 s otherwise; ``True`` always redraws in place; ``False`` prints
    only the summary. ``lb_policy`` is any meshlib policy name (default:
    meshlib's default). Ctrl-C ends the run early and the summary still
    prints (``result.interrupted`` says so). Raises
    :class:`~meshlib.ConfigError` for a bad ``lb_policy``. ``grpc`` runs the
    gRPC agent pool (:mod:`meshlib.demo.grpc_pool`) beside the HTTP agents.
    ``breaker_act`` adds a 3 s second act in which a circuit breaker opens,
    probes and closes in front of an agent that fails for a while.
    """
    if not duration > 0:
        raise ValueError("duration must be positive")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    out = sys.stdout if out is None else out
    width = terminal_width(out, DEFAULT_WIDTH)
    scenario = Scenario.build(agents, duration)
    fleet = Fleet(scenario)
    view = LiveView.for_stream(out, live)
    interrupted = False
    pool: "GrpcPool | None" = None
    grpc_text = ""
    try:
        config = mesh_config([a.address for a in fleet.agents], lb_policy)
        if grpc:
            from .grpc_pool import GrpcPool

            pool = GrpcPool(scenario)
            config["services"].update(pool.services())
        with Mesh(config=config) as mesh:
            extra = None if pool is None else _pool_lines(pool, mesh)
            run = _Run(scenario, fleet, mesh, view, concurrency, extra)
            try:
                run.start()
                if pool is not None:
                    pool.start(mesh, run.origin)
                interrupted = run.drive()
            finally:
                try:
                    elapsed = run.stop()
                except KeyboardInterrupt:  # a second Ctrl-C while stopping: stop anyway
                    interrupted = True
                    elapsed = run.stop()
                if pool is not None:
                    pool.stop()
            if run.last_draw is None or elapsed - run.last_draw > 0.5:
                run.draw(elapsed)
            result = run.result(elapsed, interrupted, concurrency)
            if pool is not None:
                grpc_text = pool.summary(mesh, width)
    finally:
        fleet.stop()
        if pool is not None:
            pool.stop()
        view.close()
    if view.mode != "off":
        out.write("\n")
    result.grpc_summary = grpc_text
    if breaker_act and not interrupted:
        progress = "Act 2: a circuit breaker in front of an agent that fails for a while (3 s)..."
        if view.live:  # a progress line, erased before the summary
            out.write(progress[: width])
            out.flush()
        try:
            result.breaker = _breaker_act()
        finally:
            if view.live:
                out.write("\r\x1b[2K")
    result.summary = render_summary(result, width)
    out.write(result.summary)
    out.flush()
    return result


def _breaker_act() -> Any:
    from .breaker import run_breaker_act

    return run_breaker_act()


def _pool_lines(pool: "GrpcPool", mesh: Mesh) -> Callable[[float], list[str]]:
    return lambda t: pool.lines(mesh, t)

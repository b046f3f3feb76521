"""``meshlib demo``: watch the balancer route around slow, failing and dead agents.

Everything runs in this process on 127.0.0.1, with no registry:

* a few HTTP **agents** (stdlib ``ThreadingHTTPServer``), each answering JSON
  that names itself. Their behaviour is scripted: most are fast; one is ten
  times slower; one starts answering 503 at 40% of the run; one goes hard down
  (its listening socket is closed, so connections are refused) at 60%;
* a :class:`~meshlib.Mesh` built programmatically with one service, ``agents``,
  whose static endpoints are those agents;
* a few **client threads** calling ``http://agents/work`` through
  ``mesh.requests_session()`` as fast as they can.

While it runs, a per-agent table is redrawn in place (when the output is a
terminal) or printed every two seconds (when it is not). At the end a summary
says, from the measurements of this run, what the balancer did.

Tests and scripts call :func:`run_demo`; the ``meshlib demo`` command is a thin
wrapper around it.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import textwrap
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.client import RemoteDisconnected
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Sequence, TextIO

import requests
from urllib3.exceptions import NewConnectionError, ProtocolError

from .demo_breaker import BreakerAct, run_breaker_act
from .errors import MeshError
from .mesh import Mesh

__all__ = ["run_demo", "DemoResult", "AgentReport", "Phase", "Scenario", "AgentSpec"]

SERVICE = "agents"
URL = f"http://{SERVICE}/work"

FAST_LATENCY = 0.003  # seconds of "work" per request on a fast agent
SLOW_FACTOR = 10
FAIL_AT = 0.4  # fraction of the run after which the failing agent answers 503
DOWN_AT = 0.6  # fraction of the run after which the down agent is gone

#: Agent roles, in the order the special ones are appended after the fast ones.
FAST, SLOW, FAILING, DOWN = "fast", "slow", "failing", "down"
SPECIAL_ROLES = (SLOW, FAILING, DOWN)

#: Caller-visible error kinds that mean "could not talk to an agent at all".
CONNECTION_KINDS = ("connection refused", "connection reset", "connection error", "connect timeout")


# ============================================================== scenario


@dataclass(frozen=True)
class AgentSpec:
    """One scripted agent: its name, role and time (in seconds since the
    traffic started) at which its role kicks in, if any."""

    name: str
    role: str
    latency: float
    at: float | None = None

    def describe(self) -> str:
        if self.role == SLOW:
            return f"{SLOW_FACTOR}x slower"
        if self.role == FAILING:
            return f"503 from t={self.at:.1f}s"
        if self.role == DOWN:
            return f"down from t={self.at:.1f}s"
        return "fast"


@dataclass(frozen=True)
class Scenario:
    """The agents of a run and what happens to them."""

    agents: tuple[AgentSpec, ...]
    duration: float

    @classmethod
    def build(cls, n_agents: int, duration: float) -> "Scenario":
        """``max(1, n - 3)`` fast agents, then (as far as ``n`` allows) one
        slow, one that starts failing and one that goes down.

        Five agents tell the whole story: agent-1 and agent-2 fast, agent-3
        slow, agent-4 failing at 40% of the run, agent-5 down at 60%.
        """
        if n_agents < 1:
            raise ValueError("the demo needs at least one agent")
        roles = [FAST] * max(1, n_agents - len(SPECIAL_ROLES)) + list(SPECIAL_ROLES)
        specs = []
        for i, role in enumerate(roles[:n_agents], start=1):
            latency = FAST_LATENCY * (SLOW_FACTOR if role == SLOW else 1)
            at = {FAILING: FAIL_AT * duration, DOWN: DOWN_AT * duration}.get(role)
            specs.append(AgentSpec(f"agent-{i}", role, latency, at))
        return cls(tuple(specs), duration)

    def by_role(self, role: str) -> list[AgentSpec]:
        return [a for a in self.agents if a.role == role]

    def events(self) -> list[AgentSpec]:
        """Agents whose behaviour changes during the run, in time order."""
        return sorted((a for a in self.agents if a.at is not None), key=lambda a: a.at or 0.0)


# ============================================================== agents


class _AgentServer(ThreadingHTTPServer):
    # Handler threads are joined by server_close(), so stopping leaves none behind.
    daemon_threads = False
    block_on_close = True
    request_queue_size = 128


class Agent:
    """One scripted HTTP agent on a free 127.0.0.1 port, served by a thread.

    Every request is answered on its own connection (HTTP/1.0), so once the
    agent is killed every new attempt is a refused connection, never a
    half-open keep-alive one.
    """

    def __init__(self, spec: AgentSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self.origin = 0.0  # clock value at which the traffic started
        self.down_at: float | None = None  # seconds since origin, once killed
        self._rng = random.Random()
        self._server = _AgentServer(("127.0.0.1", 0), _handler_for(self))
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, name=f"meshlib-demo-{spec.name}", daemon=True)
        self._started = False
        self._closed = threading.Event()

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def failing(self, now: float | None = None) -> bool:
        if self.spec.role != FAILING or self.spec.at is None:
            return False
        return (self.clock() if now is None else now) - self.origin >= self.spec.at

    def behaviour(self, t: float) -> str:
        """The scripted state at ``t`` seconds: up, slow, failing or down."""
        if self.down_at is not None and t >= self.down_at:
            return "down"
        if self.spec.role == SLOW:
            return "slow"
        if self.spec.role == FAILING and self.spec.at is not None and t >= self.spec.at:
            return "failing"
        return "up"

    def respond(self, request: BaseHTTPRequestHandler) -> None:
        if self.failing():
            self._send(request, 503, {"agent": self.name, "error": "overloaded, try another agent"})
            return
        work = self.spec.latency * self._rng.uniform(0.8, 1.2)
        time.sleep(work)
        self._send(request, 200, {"agent": self.name, "result": "done", "work_ms": round(work * 1000, 2)})

    def _send(self, request: BaseHTTPRequestHandler, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _serve(self) -> None:
        server = self._server
        try:
            server.serve_forever(poll_interval=0.05)
        finally:
            # Serve what the kernel already accepted, then close the listening
            # socket at once: from here on connections are refused.
            sock = server.socket
            try:
                sock.setblocking(False)
                while True:
                    try:
                        conn, addr = sock.accept()
                    except OSError:
                        break
                    conn.setblocking(True)
                    server.process_request(conn, addr)
            finally:
                server.server_close()  # also joins the handler threads
                self._closed.set()

    def kill(self) -> None:
        """Go hard down: stop listening, so new connections are refused."""
        self.stop()
        if self.down_at is None:
            self.down_at = self.clock() - self.origin

    def stop(self) -> None:
        if self._started:
            self._server.shutdown()
            self._thread.join(5.0)
        elif not self._closed.is_set():
            self._server.server_close()
            self._closed.set()


def _handler_for(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        server_version = "meshlib-demo-agent"

        def do_GET(self) -> None:
            agent.respond(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the terminal for the table

    return Handler


class Fleet:
    """The agents of a scenario, started together and stopped together."""

    def __init__(self, scenario: Scenario) -> None:
        self.agents: list[Agent] = []
        try:
            for spec in scenario.agents:
                self.agents.append(Agent(spec))
        except BaseException:
            self.stop()
            raise
        self.by_address = {a.address: a for a in self.agents}

    def start(self, origin: float) -> None:
        for agent in self.agents:
            agent.origin = origin
            agent.start()

    def __getitem__(self, name: str) -> Agent:
        return next(a for a in self.agents if a.name == name)

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()


# ============================================================== traffic


class CallLog:
    """What the callers saw: outcomes by kind and latency per answering agent."""

    #: Latency samples kept per agent (the p50 is over the most recent ones).
    MAX_SAMPLES = 50_000

    def __init__(self, names: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = {n: Counter() for n in names}
        self._latency: dict[str, deque[float]] = {n: deque(maxlen=self.MAX_SAMPLES) for n in names}

    def answered(self, agent: str | None, status: int, seconds: float) -> None:
        ok = status < 400
        with self._lock:
            self.total += 1
            if ok:
                self.ok += 1
            else:
                self.errors[f"HTTP {status}"] += 1
            if agent in self.statuses:
                self.statuses[agent][status] += 1
                if ok:
                    self._latency[agent].append(seconds)

    def failed(self, kind: str) -> None:
        with self._lock:
            self.total += 1
            self.errors[kind] += 1

    def p50_ms(self, agent: str) -> float | None:
        with self._lock:
            samples = sorted(self._latency.get(agent, ()))
        if not samples:
            return None
        mid = len(samples) // 2
        median = samples[mid] if len(samples) % 2 else (samples[mid - 1] + samples[mid]) / 2
        return median * 1000

    @property
    def connection_errors(self) -> int:
        return sum(n for kind, n in self.errors.items() if kind in CONNECTION_KINDS)


def error_kind(exc: BaseException) -> str:
    """A caller-visible error, in words."""
    if isinstance(exc, MeshError):
        return type(exc).__name__
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.Timeout):
        return "read timeout"
    if isinstance(exc, requests.ConnectionError):
        e: BaseException | None = exc
        for _ in range(8):
            if e is None:
                break
            if isinstance(e, (ConnectionRefusedError, NewConnectionError)):
                return "connection refused"
            if isinstance(e, (ConnectionResetError, BrokenPipeError, RemoteDisconnected, ProtocolError)):
                return "connection reset"
            reason = getattr(e, "reason", None)
            e = reason if isinstance(reason, BaseException) else (e.__cause__ or e.__context__)
        return "connection error"
    return type(exc).__name__


class Traffic:
    """``concurrency`` client threads calling ``URL`` through the mesh until stopped."""

    def __init__(self, mesh: Mesh, concurrency: int, log: CallLog) -> None:
        self._mesh = mesh
        self._log = log
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, name=f"meshlib-demo-client-{i}", daemon=True)
            for i in range(1, concurrency + 1)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(10.0)

    def _client(self) -> None:
        log = self._log
        session = self._mesh.requests_session()
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    response = session.get(URL, timeout=(1.0, 5.0))
                except Exception as exc:  # every caller-visible failure is counted by kind
                    log.failed(error_kind(exc))
                    self._stop.wait(0.01)  # never spin on a hard error
                    continue
                log.answered(_agent_of(response), response.status_code, time.perf_counter() - started)
        finally:
            session.close()


def _agent_of(response: requests.Response) -> str | None:
    try:
        return str(response.json()["agent"])
    except (ValueError, KeyError, TypeError):
        return None


# ============================================================== measurements


def service_stats(mesh: Mesh) -> dict[str, Any]:
    """``mesh.stats()`` for the demo's service."""
    return dict(mesh.stats()["services"][SERVICE])


def by_address(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A service's per-endpoint stats, keyed by endpoint address."""
    return {ep["address"]: ep for ep in service["endpoints"]}


class RecentShare:
    """Each endpoint's share of the requests sent during the last ``window`` seconds."""

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def update(self, t: float, requests_by_address: Mapping[str, int]) -> dict[str, float | None]:
        self._samples.append((t, dict(requests_by_address)))
        while len(self._samples) > 2 and self._samples[1][0] <= t - self.window:
            self._samples.popleft()
        base = self._samples[0][1]
        delta = {a: n - base.get(a, 0) for a, n in requests_by_address.items()}
        total = sum(delta.values())
        return {a: (d / total if total else None) for a, d in delta.items()}


# ============================================================== table rendering


@dataclass(frozen=True)
class Row:
    name: str
    address: str
    requests: int
    share: float
    recent: float | None
    p50_ms: float | None
    failed: int
    refused: int
    ewma_ms: float
    state: str
    mesh_state: str


HEADERS = ("agent", "address", "reqs", "share", "last {window:g}s", "p50 ms", "5xx", "refused", "ewma ms", "state", "meshlib")
ALIGN = "<<>>>>>>><<"


def collect_rows(fleet: Fleet, stats: Mapping[str, Mapping[str, Any]], log: CallLog, t: float, recent: Mapping[str, float | None]) -> list[Row]:
    rows = []
    for agent in fleet.agents:
        ep = stats.get(agent.address, {})
        failures = int(ep.get("failures", 0))
        refused = int(ep.get("connect_failures", 0))
        rows.append(
            Row(
                name=agent.name,
                address=agent.address,
                requests=int(ep.get("requests", 0)),
                share=float(ep.get("share", 0.0)),
                recent=recent.get(agent.address),
                p50_ms=log.p50_ms(agent.name),
                failed=failures - refused,
                refused=refused,
                ewma_ms=float(ep.get("ewma_ms", 0.0)),
                state=agent.behaviour(t),
                mesh_state=str(ep.get("state", "?")),
            )
        )
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, width, a in zip(cells, widths, align):
            out.append(str(cell).ljust(width) if a == "<" else str(cell).rjust(width))
        return "  ".join(out).rstrip()

    return [line(headers)] + [line(r) for r in rows]


def render_table(rows: Sequence[Row], window: float = 1.0) -> list[str]:
    cells = [
        (r.name, r.address, str(r.requests), _pct(r.share), _pct(r.recent), _ms(r.p50_ms), str(r.failed), str(r.refused), _ms(r.ewma_ms), r.state, r.mesh_state)
        for r in rows
    ]
    return format_table([h.format(window=window) for h in HEADERS], cells, ALIGN)


def render_status(t: float, duration: float, policy: str, log: CallLog, service: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The title above the table and the lines below it."""
    title = f'meshlib demo: service "{SERVICE}", policy {policy}, t={t:4.1f}s of {duration:.1f}s'
    errors = ", ".join(f"{n} {kind}" for kind, n in sorted(log.errors.items())) or "no errors"
    rate = log.total / t if t > 0 else 0.0
    outlier = service.get("outlier_detection") or {}
    return title, [
        f"callers: {log.total} calls ({rate:.0f}/s), {log.ok} ok, {errors}",
        f"meshlib: {service.get('retries', 0)} retries on another agent ({service.get('retries_budget_exhausted', 0)} refused by the retry budget), "
        f"{outlier.get('ejections_enforced_total', 0)} ejections, {outlier.get('ejections_active', 0)} agent(s) ejected now",
    ]


_COLORS = {"failing": "33", "down": "31"}


class LiveView:
    """Shows the table: redrawn in place about 4 times a second on a terminal
    (``ansi``), printed every 2 s otherwise (``plain``), or not at all (``off``)."""

    def __init__(self, out: TextIO, mode: str) -> None:
        if mode not in ("ansi", "plain", "off"):
            raise ValueError(f"unknown live mode {mode!r}")
        self.out = out
        self.mode = mode
        self.interval = {"ansi": 0.25, "plain": 2.0, "off": float("inf")}[mode]
        self._drawn = 0

    @classmethod
    def for_stream(cls, out: TextIO, live: bool | None) -> "LiveView":
        if live is False:
            return cls(out, "off")
        isatty = getattr(out, "isatty", None)
        tty = bool(isatty and isatty())
        return cls(out, "ansi" if live or tty else "plain")

    def show(self, title: str, table: list[str], footer: Sequence[str], states: Sequence[str]) -> None:
        """Draw ``title``, ``table`` (a header line, then one line per agent,
        coloured by the agent's state in ``states``) and ``footer`` lines."""
        if self.mode == "off":
            return
        if self.mode == "plain":
            self.out.write("\n".join([title, *table, *footer]) + "\n\n")
            self.out.flush()
            return
        width = max(20, shutil.get_terminal_size((120, 24)).columns - 1)
        lines = [_style(title[:width], "1")]
        lines.append(table[0][:width])
        for line, state in zip(table[1:], states):
            lines.append(_style(line[:width], _COLORS.get(state)))
        lines += [line[:width] for line in footer]
        buf = "\x1b[?25l"  # hide the cursor while redrawing
        if self._drawn:
            buf += f"\x1b[{self._drawn}A\r"
        buf += "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J"
        self.out.write(buf)
        self.out.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        if self.mode == "ansi":
            self.out.write("\x1b[?25h")  # show the cursor again
            self.out.flush()


def _style(text: str, code: str | None) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if code else text


# ============================================================== result and summary


@dataclass(frozen=True)
class Phase:
    """A stretch of the run between two scripted events."""

    label: str
    start: float
    end: float
    requests: Mapping[str, int]  # agent name -> attempts meshlib sent it in this phase
    event: str | None = None  # the agent whose scripted change starts this phase

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def share(self, name: str) -> float | None:
        return self.requests.get(name, 0) / self.total if self.total else None


@dataclass(frozen=True)
class AgentReport:
    name: str
    role: str
    description: str
    address: str
    requests: int  # attempts meshlib sent to this agent (mesh.stats())
    share: float
    p50_ms: float | None  # of successful calls it answered, as callers measured
    answered: Mapping[int, int]  # HTTP status -> calls it answered
    failed: int  # attempts that got an error answer (5xx) or broke
    refused: int  # connect failures
    ewma_ms: float
    ejections: int  # times outlier detection ejected it
    at: float | None  # when its role kicked in (failing / down), seconds since start
    due: float | None = None  # when the scenario scheduled that


@dataclass
class DemoResult:
    """Everything a run measured; :attr:`summary` is the text printed at the end."""

    policy: str
    duration: float
    elapsed: float
    concurrency: int
    interrupted: bool
    agents: list[AgentReport]
    phases: list[Phase]
    total_calls: int
    ok_calls: int
    errors: dict[str, int]
    retries: int
    budget_refused: int = 0
    breaker: "BreakerAct | None" = None
    findings: list[str] = field(default_factory=list)
    summary: str = ""

    def agent(self, name: str) -> AgentReport:
        return next(a for a in self.agents if a.name == name)

    def by_role(self, role: str) -> list[AgentReport]:
        return [a for a in self.agents if a.role == role]

    @property
    def connection_errors(self) -> int:
        return sum(n for kind, n in self.errors.items() if kind in CONNECTION_KINDS)

    @property
    def throughput(self) -> float:
        return self.total_calls / self.elapsed if self.elapsed > 0 else 0.0

    def shares_around(self, name: str) -> tuple[float | None, float | None]:
        """``name``'s share of all attempts before and after its scripted change."""
        idx = next((i for i, p in enumerate(self.phases) if p.event == name), len(self.phases))
        return _share(self.phases[:idx], name), _share(self.phases[idx:], name)


def _share(phases: Sequence[Phase], name: str) -> float | None:
    total = sum(p.total for p in phases)
    return sum(p.requests.get(name, 0) for p in phases) / total if total else None


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return f"was {_pct(before)} before and {_pct(after)} after"
    if after < before * 0.5:
        return f"dropped from {_pct(before)} to {_pct(after)}"
    if after > before * 1.5:
        return f"rose from {_pct(before)} to {_pct(after)}"
    return f"stayed about the same ({_pct(before)} before, {_pct(after)} after)"


def findings(result: DemoResult) -> list[str]:
    """What the balancer did, in plain words, from this run's numbers."""
    out: list[str] = []
    fast = result.by_role(FAST)
    fast_p50s = sorted(a.p50_ms for a in fast if a.p50_ms is not None)
    fast_p50 = fast_p50s[len(fast_p50s) // 2] if fast_p50s else None
    first = result.phases[0] if result.phases else None

    for a in result.by_role(SLOW):
        out.append(_slow_finding(result, a, fast, fast_p50, first))

    for a in result.by_role(FAILING):
        if a.at is None or a.at >= result.elapsed:
            out.append(f"{a.name} was to start answering 503 at t={_at(a.at)}, but the run ended first.")
            continue
        before, after = result.shares_around(a.name)
        n503 = sum(n for status, n in a.answered.items() if status >= 500)
        ejected = f"outlier detection ejected it {a.ejections} time{'' if a.ejections == 1 else 's'}" if a.ejections else "it was never ejected"
        out.append(
            f"{a.name} started answering 503 at t={_at(a.at)}: {ejected} (3 answers of 503 in a row eject an agent for "
            f"2 s x the number of its ejections), and its share of requests {_change(before, after)}. Each of its {a.failed} "
            f"503 answers was retried on another agent, so callers received {n503} of them."
        )

    for a in result.by_role(DOWN):
        if a.at is None:
            out.append(f"{a.name} was to go down at t={_at(a.due)}, but the run ended first.")
            continue
        before, after = result.shares_around(a.name)
        conn = result.connection_errors
        if result.retries >= a.refused:
            retried = f"each of its {a.refused} refused connections was retried on another endpoint"
        else:
            retried = f"meshlib retried {result.retries} of its {a.refused} refused connections on another endpoint"
        if a.ejections:
            retried = f"outlier detection ejected it {a.ejections} time{'' if a.ejections == 1 else 's'}; " + retried
        out.append(
            f"{a.name} went down at t={_at(a.at)} (connections refused): its share of meshlib's attempts {_change(before, after)}; "
            f"{retried}, and callers saw {conn} connection error{'' if conn == 1 else 's'}."
        )
    return out


def _slow_finding(result: DemoResult, a: AgentReport, fast: Sequence[AgentReport], fast_p50: float | None, first: Phase | None) -> str:
    line = f"{a.name} ({a.description}: p50 {_ms(a.p50_ms)} ms against {_ms(fast_p50)} ms) got {_pct(a.share)} of all requests"
    if len(fast) == 1:
        line += f", always-fast {fast[0].name} {_pct(fast[0].share)}"
    elif fast:
        line += f", the always-fast agents {_pct(sum(f.share for f in fast) / len(fast))} each on average"
    if first is None or len(result.phases) < 2 or first.share(a.name) is None:
        return line + "."
    fast_first = [s for s in (first.share(f.name) for f in fast) if s is not None]
    line += f". While every agent was up it got {_pct(first.share(a.name))}"
    if len(fast_first) == 1:
        line += f" ({fast[0].name} {_pct(fast_first[0])})"
    elif fast_first:
        line += f" (fast agents {_pct(sum(fast_first) / len(fast_first))} each)"
    later = [(p, p.share(a.name)) for p in result.phases[1:]]
    if any(s is not None for _, s in later):
        line += "; " + ", ".join(f"{_pct(s)} {_phase_words(result, p)}" for p, s in later if s is not None)
    line += "."
    grew = any(s is not None and s > 2 * (first.share(a.name) or 0) + 0.01 for _, s in later)
    if grew and result.policy == "peak_ewma":
        line += (
            f" (peak_ewma picks the better of two random agents, so a pick that draws {a.name} "
            f"and a failing agent goes to {a.name}.)"
        )
    return line


def _phase_words(result: DemoResult, p: Phase) -> str:
    if p.event is None:
        return f"in phase {p.label!r}"
    what = "went down" if result.agent(p.event).role == DOWN else "started failing"
    return f"after {p.event} {what}"


def _at(t: float | None) -> str:
    return "?" if t is None else f"{t:.1f}s"


def render_summary(result: DemoResult) -> str:
    lines = []
    length = f"stopped by Ctrl-C at t={result.elapsed:.1f}s of {result.duration:.1f}s" if result.interrupted else f"{result.elapsed:.1f}s"
    lines.append(
        f"meshlib demo summary: {len(result.agents)} agents, {result.concurrency} client threads, "
        f"policy {result.policy}, {length}"
    )
    lines.append("")
    cells = [
        (a.name, a.description, a.address, str(a.requests), _pct(a.share), _ms(a.p50_ms), str(a.failed), str(a.refused))
        for a in result.agents
    ]
    lines += format_table(("agent", "behaviour", "address", "requests", "share", "p50 ms", "5xx", "refused"), cells, "<<<>>>>>")
    lines.append("(requests: attempts meshlib sent to the agent, refused connections included;")
    lines.append(" p50: the latency callers saw for the agent's successful answers)")

    if len(result.phases) > 1:
        lines.append("")
        headers = ["share by phase"] + [f"{p.label} ({p.start:.1f}-{p.end:.1f}s)" for p in result.phases]
        rows = [[a.name] + [_pct(p.share(a.name)) for p in result.phases] for a in result.agents]
        rows.append(["attempts"] + [str(p.total) for p in result.phases])
        lines += format_table(headers, rows, "<" + ">" * len(result.phases))

    lines.append("")
    lines.append("What the balancer did:")
    for finding in result.findings:
        lines.append(textwrap.fill(finding, width=100, initial_indent="  - ", subsequent_indent="    "))
    lines.append("")
    errors = ", ".join(f"{n} {kind}" for kind, n in sorted(result.errors.items()))
    lines.append(
        f"Callers: {result.total_calls} requests in {result.elapsed:.1f}s ({result.throughput:.0f} req/s); "
        f"{result.ok_calls} ok" + (f", {errors}" if errors else ", no errors") + "."
    )
    conn = result.connection_errors
    lines.append(
        f"Caller-visible connection errors: {conn}. Attempts meshlib retried on another agent: {result.retries} "
        f"({result.budget_refused} more refused by the retry budget)."
    )
    if result.breaker is not None:
        head, *items = result.breaker.summary()
        lines += ["", head]
        for item in items:
            lines.append(textwrap.fill(item[4:], width=100, initial_indent="  - ", subsequent_indent="    "))
    return "\n".join(lines) + "\n"


# ============================================================== the run


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
        next_draw = 0.0 if self.view.mode == "ansi" else self.view.interval
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
        self.view.show(title, render_table(rows, self.recent.window), footer, [r.state for r in rows])
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
            agents=_reports(self.fleet, by_address(service), self.log),
            phases=phases,
            total_calls=self.log.total,
            ok_calls=self.log.ok,
            errors=dict(self.log.errors),
            retries=int(service["retries"]),
            budget_refused=int(service["retries_budget_exhausted"]),
        )
        result.findings = findings(result)
        result.summary = render_summary(result)
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
    ``out`` is a terminal and prints one every 2 s otherwise; ``True`` always
    redraws in place; ``False`` prints only the summary. ``lb_policy`` is any
    meshlib policy name (default: meshlib's default). Ctrl-C ends the run
    early and the summary still prints (``result.interrupted`` says so).
    Raises :class:`~meshlib.ConfigError` for a bad ``lb_policy``. ``grpc``
    runs the gRPC agent pool (``meshlib.demo_grpc``) beside the HTTP agents.
    ``breaker_act`` adds a 3 s second act in which a circuit breaker opens,
    probes and closes in front of an agent that fails for a while.
    """
    if not duration > 0:
        raise ValueError("duration must be positive")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    out = sys.stdout if out is None else out
    scenario = Scenario.build(agents, duration)
    fleet = Fleet(scenario)
    view = LiveView.for_stream(out, live)
    interrupted = False
    pool = None
    grpc_text = ""
    try:
        config = mesh_config([a.address for a in fleet.agents], lb_policy)
        if grpc:
            from .demo_grpc import GrpcPool

            pool = GrpcPool(scenario)
            config["services"].update(pool.services())
        with Mesh(config=config) as mesh:
            run = _Run(scenario, fleet, mesh, view, concurrency, None if pool is None else lambda t: pool.lines(mesh, t))
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
                grpc_text = pool.summary(mesh)
    finally:
        fleet.stop()
        if pool is not None:
            pool.stop()
        view.close()
    if view.mode != "off":
        out.write("\n")
    if breaker_act and not interrupted:
        if view.mode != "off":
            out.write("Act 2: a circuit breaker in front of an agent that fails for a while (3 s)...\n")
            out.flush()
        result.breaker = run_breaker_act()
    result.summary = render_summary(result) + grpc_text
    out.write(result.summary)
    out.flush()
    return result


def _reports(fleet: Fleet, stats: Mapping[str, Mapping[str, Any]], log: CallLog) -> list[AgentReport]:
    reports = []
    for agent in fleet.agents:
        ep = stats.get(agent.address, {})
        refused = int(ep.get("connect_failures", 0))
        spec = agent.spec
        at = agent.down_at if spec.role == DOWN else spec.at
        description = spec.describe()
        if spec.role == DOWN:
            description = "never went down" if at is None else f"down from t={at:.1f}s"
        reports.append(
            AgentReport(
                name=agent.name,
                role=spec.role,
                description=description,
                address=agent.address,
                requests=int(ep.get("requests", 0)),
                share=float(ep.get("share", 0.0)),
                p50_ms=log.p50_ms(agent.name),
                answered=dict(log.statuses.get(agent.name, {})),
                failed=int(ep.get("failures", 0)) - refused,
                refused=refused,
                ewma_ms=float(ep.get("ewma_ms", 0.0)),
                ejections=int(ep.get("times_ejected", 0)),
                at=at,
                due=spec.at,
            )
        )
    return reports

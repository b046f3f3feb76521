"""The demo's second act: a circuit breaker opening, probing and closing.

One agent answers 500 for a stretch of the act; one caller keeps calling it
through a Mesh whose service has a cluster breaker. The act records what the
breaker did (its transitions, and how many calls it refused without touching
the network) and the agent's own request count, so the summary is measured,
not asserted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


from ..errors import CircuitOpenError
from ..mesh import Mesh

__all__ = ["BreakerAct", "run_breaker_act"]

SERVICE = "flaky"
FAIL_FROM, FAIL_UNTIL = 0.5, 2.0  # seconds into the act
LENGTH = 3.0
SETTINGS = {
    "breaker": "cluster",
    "breaker_minimum_calls": 10,
    "breaker_window_size": 10,
    "breaker_failure_rate_threshold": 50,
    "breaker_wait_duration_open": "400ms",
    "breaker_permitted_calls_half_open": 3,
    "outlier_detection": False,
}


@dataclass
class BreakerAct:
    """What happened in the act (times in seconds since it started)."""

    transitions: list[tuple[float, str, str]] = field(default_factory=list)
    calls: int = 0
    ok: int = 0
    errors: int = 0
    rejected: int = 0
    rejected_while_failing: int = 0
    agent_hits_while_open: int = 0
    agent_hits: int = 0

    def first(self, new: str, after: float = 0.0) -> float | None:
        return next((t for t, _, n in self.transitions if n == new and t >= after), None)

    def summary(self) -> list[str]:
        opened = self.first("open")
        closed = self.first("closed", after=FAIL_UNTIL)
        reopened = sum(1 for _, old, new in self.transitions if old == "half_open" and new == "open")
        lines = [f"The breaker (service {SERVICE!r}: one agent answering 500 from t={FAIL_FROM:.1f}s to t={FAIL_UNTIL:.1f}s of {LENGTH:.1f}s):"]
        if opened is None:
            lines.append("  - it never opened (too few calls in the window).")
            return lines
        lines.append(
            f"  - opened at t={opened:.2f}s once half of its last {SETTINGS['breaker_window_size']} calls had failed; "
            f"from then on it refused {self.rejected} calls at once, without touching the network "
            f"(the agent saw {self.agent_hits_while_open} requests while the breaker was open)."
        )
        lines.append(
            f"  - every {SETTINGS['breaker_wait_duration_open']} it let {SETTINGS['breaker_permitted_calls_half_open']} probe calls through "
            f"(half-open); {reopened} probe round{'' if reopened == 1 else 's'} failed and re-opened it."
        )
        if closed is not None:
            lines.append(f"  - closed at t={closed:.2f}s, when the probes succeeded after the agent recovered.")
        else:
            lines.append("  - it had not closed again when the act ended.")
        lines.append(f"  - callers: {self.calls} calls, {self.ok} ok, {self.errors} errors passed through, {self.rejected} refused fast.")
        return lines


class _Flaky(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the handler threads

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.origin = time.monotonic()
        self.hits = 0
        self.hit_times: list[float] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Flaky

    def do_GET(self) -> None:
        t = time.monotonic() - self.server.origin
        with self.server.lock:
            self.server.hits += 1
            self.server.hit_times.append(t)
        status = 500 if FAIL_FROM <= t < FAIL_UNTIL else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def run_breaker_act(length: float = LENGTH) -> BreakerAct:
    """Run the act for ``length`` seconds (the agent fails from 0.5 s to 2 s)."""
    server = _Flaky()
    threading.Thread(target=server.serve_forever, args=(0.05,), name="meshlib-demo-flaky", daemon=True).start()
    act = BreakerAct()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        with Mesh(config={"services": {SERVICE: {"endpoints": address, **SETTINGS}}}) as mesh:
            breaker = mesh.cluster(SERVICE).breaker
            assert breaker is not None
            origin = server.origin
            breaker.on_transition(lambda old, new: act.transitions.append((time.monotonic() - origin, old, new)))
            session = mesh.requests_session()
            while time.monotonic() - origin < length:
                act.calls += 1
                try:
                    status = session.get(f"http://{SERVICE}/").status_code
                except CircuitOpenError:
                    act.rejected += 1
                else:
                    if status < 500:
                        act.ok += 1
                    else:
                        act.errors += 1
                time.sleep(0.005)
            session.close()  # lets the agent's keep-alive handler threads end
        act.agent_hits = server.hits
        act.agent_hits_while_open = _hits_while_open(server.hit_times, act.transitions)
    finally:
        server.shutdown()
        server.server_close()
    return act


def _hits_while_open(hits: list[float], transitions: list[tuple[float, str, str]]) -> int:
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for t, _, new in transitions:
        if new == "open" and start is None:
            start = t
        elif new != "open" and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, float("inf")))
    # The agent stamps a request on arrival: the call whose answer opened the
    # breaker arrived before the span, the half-open probe after it.
    return sum(1 for h in hits if any(a < h < b for a, b in spans))

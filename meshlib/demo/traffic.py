"""The demo's callers and what they saw: client threads calling the agents
through ``mesh.requests_session()``, their outcomes by kind and latency, and
each agent's share of meshlib's recent attempts."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from http.client import RemoteDisconnected
from typing import Any, Mapping, Sequence

import requests
from urllib3.exceptions import NewConnectionError, ProtocolError

from ..errors import MeshError
from ..mesh import Mesh

__all__ = ["CallLog", "Traffic", "RecentShare", "error_kind", "service_stats", "by_address", "SERVICE", "URL", "CONNECTION_KINDS"]

SERVICE = "agents"
URL = f"http://{SERVICE}/work"

#: Caller-visible error kinds that mean "could not talk to an agent at all".
CONNECTION_KINDS = ("connection refused", "connection reset", "connection error", "connect timeout")


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


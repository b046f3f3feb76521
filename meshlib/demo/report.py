"""What a run measured (:class:`DemoResult`), and what the balancer did, in words."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .agents import Fleet
from .scenario import DOWN, FAILING, FAST, SLOW
from .table import ms as _ms
from .table import pct as _pct
from .traffic import CONNECTION_KINDS, CallLog

if TYPE_CHECKING:
    from .breaker import BreakerAct

__all__ = ["Phase", "AgentReport", "DemoResult", "findings", "agent_reports"]


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
    grpc_summary: str = ""  # the gRPC pool's section, when it ran
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


def agent_reports(fleet: Fleet, stats: Mapping[str, Mapping[str, Any]], log: CallLog) -> list[AgentReport]:
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


"""The live table: one row per agent, what the callers and meshlib saw so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .._table import format_table
from .agents import Fleet
from .scenario import mesh_state
from .traffic import SERVICE, CallLog

__all__ = ["Row", "collect_rows", "render_table", "render_status", "pct", "ms"]


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
#: Left out, in this order, when the terminal is too narrow for the whole table.
OPTIONAL = ("address",)


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
                mesh_state=mesh_state(dict(ep)),
            )
        )
    return rows


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def render_table(rows: Sequence[Row], window: float = 1.0, width: int | None = None) -> list[str]:
    """The header line(s), then one line per agent; ``width`` drops the
    address column when the whole table would not fit."""
    cells = [
        (r.name, r.address, str(r.requests), pct(r.share), pct(r.recent), ms(r.p50_ms), str(r.failed), str(r.refused), ms(r.ewma_ms), r.state, r.mesh_state)
        for r in rows
    ]
    headers = [h.format(window=window) for h in HEADERS]
    if width is not None:
        # two-line headings for the number columns keep them narrow
        headers = [h.replace(" ", "\n", 1) if h not in ("agent", "address") else h for h in headers]
    return format_table(headers, cells, ALIGN, width=width, optional=OPTIONAL)


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

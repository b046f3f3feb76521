"""The text a run ends with: one summary, in act order, fitted to a width.

Act 1 is the HTTP agents (and, when it ran, the gRPC pool beside them);
act 2 the circuit breaker. Tables leave out their address column rather than
wrap when the width is short, and prose is wrapped at word boundaries.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

from .._table import format_table, table_width
from .report import DemoResult
from .table import ms, pct
from .traffic import SERVICE

__all__ = ["render_summary", "fill", "DEFAULT_WIDTH"]

#: The width of a summary that is not going to a terminal.
DEFAULT_WIDTH = 100


def fill(text: str, width: int, first: str = "  - ", rest: str = "    ") -> str:
    """``text`` as a bulleted paragraph, wrapped at word boundaries to ``width``."""
    return textwrap.fill(text, width=width, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False)


def wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False) or [""]


def fitted(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str, width: int, optional: Sequence[str] = ()) -> list[str]:
    """A table that fits ``width`` if it can: first on one heading line,
    then with headings split over two lines, then without ``optional`` columns."""
    if table_width(headers, rows) <= width:
        return format_table(headers, rows, align)
    two = [h.replace(" (", "\n(", 1) if " (" in h else h.replace(" ", "\n", 1) if h.count(" ") == 1 else h for h in headers]
    return format_table(two, rows, align, width=width, optional=optional)


def render_summary(result: DemoResult, width: int = DEFAULT_WIDTH) -> str:
    width = max(40, width)
    lines = []
    length = f"stopped by Ctrl-C at t={result.elapsed:.1f}s of {result.duration:.1f}s" if result.interrupted else f"{result.elapsed:.1f}s"
    lines += wrap(
        f"meshlib demo summary: {len(result.agents)} agents, {result.concurrency} client threads, "
        f"policy {result.policy}, {length}",
        width,
    )
    lines.append("")
    lines += wrap(f'Act 1: HTTP agents behind service "{SERVICE}", called through mesh.requests_session()', width)
    lines.append("")
    cells = [
        (a.name, a.description, a.address, str(a.requests), pct(a.share), ms(a.p50_ms), str(a.failed), str(a.refused))
        for a in result.agents
    ]
    lines += fitted(("agent", "behaviour", "address", "requests", "share", "p50 ms", "5xx", "refused"), cells, "<<<>>>>>", width, ("address",))
    lines += wrap("(requests: attempts meshlib sent to the agent, refused connections included; p50: the latency callers saw for the agent's successful answers)", width)

    if len(result.phases) > 1:
        lines.append("")
        headers = ["share by phase"] + [f"{p.label} ({p.start:.1f}-{p.end:.1f}s)" for p in result.phases]
        rows = [[a.name] + [pct(p.share(a.name)) for p in result.phases] for a in result.agents]
        rows.append(["attempts"] + [str(p.total) for p in result.phases])
        lines += fitted(headers, rows, "<" + ">" * len(result.phases), width)

    lines.append("")
    lines.append("What the balancer did:")
    for finding in result.findings:
        lines.append(fill(finding, width))
    lines.append("")
    errors = ", ".join(f"{n} {kind}" for kind, n in sorted(result.errors.items()))
    lines += wrap(
        f"Callers: {result.total_calls} requests in {result.elapsed:.1f}s ({result.throughput:.0f} req/s); "
        f"{result.ok_calls} ok" + (f", {errors}" if errors else ", no errors") + ".",
        width,
    )
    conn = result.connection_errors
    lines += wrap(
        f"Caller-visible connection errors: {conn}. Attempts meshlib retried on another agent: {result.retries} "
        f"({result.budget_refused} more refused by the retry budget).",
        width,
    )
    text = "\n".join(lines) + "\n"
    text += result.grpc_summary
    if result.breaker is not None:
        head, *items = result.breaker.summary()
        part = ["", *wrap("Act 2: a circuit breaker in front of an agent that fails for a while", width), ""]
        part += wrap(head, width)
        for item in items:
            part.append(fill(item[4:], width))
        text += "\n".join(part) + "\n"
    return text

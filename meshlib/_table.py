"""Plain-text tables for the ``meshlib`` command and the demo.

Columns are padded to their widest cell, two spaces apart. A header cell may
hold a newline (a two-line heading, so a narrow column keeps a long label).
Given a ``width``, columns named in ``optional`` are left out, in that order,
until the table fits; nothing is ever cut or wrapped inside a cell.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["format_table", "table_width"]

GAP = "  "


def _header_lines(headers: Sequence[str]) -> list[list[str]]:
    split = [str(h).split("\n") for h in headers]
    depth = max((len(s) for s in split), default=1)
    # bottom-aligned: a one-line heading sits on the last header line
    return [[([""] * (depth - len(s)) + s)[i] for s in split] for i in range(depth)]


def _widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    heads = _header_lines(headers)
    return [max(len(str(c)) for c in col) for col in zip(*heads, *rows)]


def table_width(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """The width of the widest line :func:`format_table` would print."""
    widths = _widths(headers, rows)
    return sum(widths) + len(GAP) * max(0, len(widths) - 1)


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    align: str,
    *,
    width: int | None = None,
    optional: Sequence[str] = (),
) -> list[str]:
    """The table's lines: the heading line(s), then one line per row.

    ``align`` has one ``<`` (left) or ``>`` (right) per column. ``optional``
    names headers that may be dropped, first one first, to fit ``width``.
    """
    headers, rows, align = list(headers), [list(r) for r in rows], str(align)
    for name in optional:
        if width is None or table_width(headers, rows) <= width:
            break
        if name not in headers:
            continue
        i = headers.index(name)
        del headers[i]
        align = align[:i] + align[i + 1 :]
        for r in rows:
            del r[i]
    widths = _widths(headers, rows)

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, w, a in zip(cells, widths, align):
            out.append(str(cell).ljust(w) if a == "<" else str(cell).rjust(w))
        return GAP.join(out).rstrip()

    return [line(h) for h in _header_lines(headers)] + [line(r) for r in rows]

"""How the demo shows its table while it runs.

Four modes:

* ``rich``: on a terminal when the optional ``rich`` package is installed
  (``pip install 'meshlib-client[rich]'``): a ``rich`` live display owns the
  screen and redraws the frame about 4 times a second;
* ``ansi``: on a terminal without ``rich``: the same frame redrawn in place
  with a few ANSI codes;
* ``plain``: when the output is not a terminal: a frame printed every 2 s;
* ``off``: nothing until the summary.

In the two live modes the frame fits the terminal (the table leaves out its
address column rather than lose a column at the edge; other lines are wrapped
at word boundaries), and log records and anything else written to
``sys.stderr`` while it is shown become the last lines of the frame, so a
redraw never overwrites them. Records not yet drawn are printed below the
last frame when the view closes.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import textwrap
from collections import deque
from typing import Any, Sequence, TextIO

__all__ = ["LiveView", "rich_available", "terminal_width"]

#: Log records (and stderr lines) kept at the bottom of a live frame.
LOG_LINES = 4

_COLORS = {"failing": "33", "down": "31"}
_RICH_STYLES = {"failing": "yellow", "down": "red"}


def rich_available() -> bool:
    try:
        import rich.live  # noqa: F401
    except ImportError:
        return False
    return True


def terminal_width(out: TextIO, default: int = 100) -> int:
    """The width text for ``out`` should fit: its terminal's, less one
    column, when it is a terminal; else ``default``."""
    isatty = getattr(out, "isatty", None)
    if isatty and isatty():
        return max(40, LiveView(out, "ansi").size()[0] - 1)
    return default


class _Tail:
    """The last few log records and stderr lines, for the bottom of the frame."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self.undrawn: list[str] = []
        self._partial = ""

    def add(self, line: str) -> None:
        line = line.rstrip()
        if line:
            self.lines.append(line)
            self.undrawn.append(line)

    def drawn(self) -> None:
        self.undrawn.clear()

    # sys.stderr's interface, as far as writers use it
    def write(self, text: str) -> int:
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        for line in done:
            self.add(line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class _TailHandler(logging.Handler):
    def __init__(self, tail: _Tail) -> None:
        super().__init__(logging.WARNING)
        self.tail = tail

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.tail.add(self.format(record))
        except Exception:  # pragma: no cover - a bad record must not end the demo
            self.handleError(record)


class LiveView:
    """Shows the table: redrawn in place about 4 times a second on a terminal
    (``rich`` or ``ansi``), printed every 2 s otherwise (``plain``), or not at
    all (``off``)."""

    MODES = ("rich", "ansi", "plain", "off")

    def __init__(self, out: TextIO, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown live mode {mode!r}")
        if mode == "rich" and not rich_available():
            mode = "ansi"
        self.out = out
        self.mode = mode
        self.interval = {"rich": 0.25, "ansi": 0.25, "plain": 2.0, "off": float("inf")}[mode]
        self._drawn = 0
        self._started = False
        self._tail = _Tail()
        self._handler: _TailHandler | None = None
        self._stderr: Any = None
        self._live: Any = None

    @classmethod
    def for_stream(cls, out: TextIO, live: bool | None) -> "LiveView":
        if live is False:
            return cls(out, "off")
        isatty = getattr(out, "isatty", None)
        tty = bool(isatty and isatty())
        if tty and rich_available():
            return cls(out, "rich")
        return cls(out, "ansi" if live or tty else "plain")

    @property
    def live(self) -> bool:
        """True when the frame is redrawn in place."""
        return self.mode in ("rich", "ansi")

    def size(self) -> tuple[int, int]:
        """Columns and lines of the terminal the view draws on."""
        if self._live is not None:
            return self._live.console.width, self._live.console.height
        try:
            got = os.get_terminal_size(self.out.fileno())
            return got.columns, got.lines
        except (AttributeError, ValueError, OSError):
            got = shutil.get_terminal_size((120, 24))
            return got.columns, got.lines

    @property
    def width(self) -> int | None:
        """The width a frame's lines must fit, or None when nothing is redrawn."""
        if not self.live:
            return None
        cols = self.size()[0]
        return max(20, cols if self.mode == "rich" else cols - 1)

    def start(self) -> None:
        """Take over the screen: capture log records and stderr for the frame."""
        if self._started or not self.live:
            return
        self._started = True
        self._handler = _TailHandler(self._tail)
        logging.getLogger().addHandler(self._handler)
        self._stderr, sys.stderr = sys.stderr, self._tail  # type: ignore[assignment]
        if self.mode == "rich":
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.out, highlight=False, markup=False, emoji=False)
            self._live = Live(console=console, auto_refresh=False, transient=False, redirect_stdout=False, redirect_stderr=False, vertical_overflow="crop")
            self._live.start()

    def show(self, title: str, table: list[str], footer: Sequence[str], states: Sequence[str]) -> None:
        """Draw ``title``, ``table`` (header line(s), then one line per agent,
        coloured by the agent's state in ``states``) and ``footer`` lines."""
        if self.mode == "off":
            return
        if self.mode == "plain":
            self.out.write("\n".join([title, *table, *footer]) + "\n\n")
            self.out.flush()
            return
        self.start()
        width = self.width or 80
        heads = len(table) - len(states)
        styled: list[tuple[str, str | None]] = [(line, "title") for line in _wrap(title, width)]
        styled += [(line, None) for line in table[:heads]]
        styled += [(line, state) for line, state in zip(table[heads:], states)]
        for line in footer:
            styled += [(part, None) for part in _wrap(line, width)]
        if self._tail.lines:
            styled += [(part, "log") for line in self._tail.lines for part in _wrap(line, width, "  ")]
        self._tail.drawn()
        rows = self.size()[1]
        styled = styled[: max(1, rows - 1)]  # a frame taller than the screen cannot be redrawn in place
        if self.mode == "rich":
            self._show_rich(styled)
        else:
            self._show_ansi(styled, width)

    def _show_ansi(self, styled: list[tuple[str, str | None]], width: int) -> None:
        codes = {"title": "1", "log": "2", **_COLORS}
        lines = [_style(line[:width], codes.get(kind or "")) for line, kind in styled]
        buf = "\x1b[?25l"  # hide the cursor while redrawing
        if self._drawn:
            buf += f"\x1b[{self._drawn}A\r"
        buf += "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J"
        self.out.write(buf)
        self.out.flush()
        self._drawn = len(lines)

    def _show_rich(self, styled: list[tuple[str, str | None]]) -> None:
        from rich.console import Group
        from rich.text import Text

        styles = {"title": "bold", "log": "dim", **_RICH_STYLES}
        texts = [Text(line, style=styles.get(kind or "", ""), no_wrap=True, overflow="crop") for line, kind in styled]
        self._live.update(Group(*texts), refresh=True)

    def close(self) -> None:
        """Give the screen back: the last frame stays, log records it did not
        show follow below it, the cursor is shown again."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._started:
            sys.stderr = self._stderr
            if self._handler is not None:
                logging.getLogger().removeHandler(self._handler)
                self._handler = None
            if self._tail.undrawn:
                self.out.write("".join(f"{line}\n" for line in self._tail.undrawn))
                self._tail.drawn()
            self._started = False
        if self.mode == "ansi":
            self.out.write("\x1b[?25h")  # show the cursor again
            self.out.flush()


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width=width, subsequent_indent=indent or "  ", break_long_words=True, break_on_hyphens=False) or [""]


def _style(text: str, code: str | None) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if code else text

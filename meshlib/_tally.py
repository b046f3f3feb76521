"""A count that only goes up, taken on every call without a lock.

``itertools.count.__next__`` is a single C call, so concurrent increments are
never lost under the interpreter lock; a ``threading.Lock`` around an integer
costs five to six times as much. Reading is rare (``mesh.stats()``) and goes
through the iterator's ``repr``, the one public view of its position.
"""

from __future__ import annotations

import itertools

__all__ = ["Tally"]


class Tally:
    """``add()`` counts one; ``value`` is how many have been counted."""

    __slots__ = ("_it", "add")

    def __init__(self) -> None:
        self._it = itertools.count()
        #: Count one (bound ``__next__``: one C call, no Python frame).
        self.add = self._it.__next__

    @property
    def value(self) -> int:
        # repr(count(7)) == "count(7)": the next number it would give out.
        return int(repr(self._it)[6:-1])

    def __repr__(self) -> str:
        return f"Tally({self.value})"

"""Path and header matchers, as Envoy's ``RouteMatch`` and ``HeaderMatcher``.

Each matcher is frozen and checked when built; ``matches`` is pure. Header
names are lower case; a header ending in ``-bin`` is treated as absent (gRPC's
rule, gRFC A28), and several values of one header are joined with ``,`` as
Envoy does before matching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ConfigError

__all__ = ["StringMatcher", "HeaderMatcher", "PathMatcher", "Headers", "STRING_KINDS", "HEADER_KINDS", "PATH_KINDS"]

STRING_KINDS = ("exact", "prefix", "suffix", "contains", "regex")
HEADER_KINDS = STRING_KINDS + ("present", "range")
PATH_KINDS = ("prefix", "path", "regex")


class Headers(Protocol):
    """What the router reads of a request's headers: ``get(lower-case name)``."""

    def get(self, name: str, /) -> Any: ...


def _compile(pattern: str, ignore_case: bool, where: str) -> "re.Pattern[str]":
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ConfigError(where, pattern, "a valid regular expression", detail=str(exc)) from None


@dataclass(frozen=True)
class StringMatcher:
    """Envoy's ``type.matcher.v3.StringMatcher``: ``kind`` is exact, prefix,
    suffix, contains or regex (a full match, as RE2's ``safe_regex``)."""

    kind: str
    value: str
    ignore_case: bool = False
    _regex: "re.Pattern[str] | None" = field(init=False, repr=False, compare=False, default=None)
    _needle: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if self.kind not in STRING_KINDS:
            raise ConfigError("string_match", self.kind, "one of " + ", ".join(STRING_KINDS))
        if self.kind == "regex":
            object.__setattr__(self, "_regex", _compile(self.value, self.ignore_case, "safe_regex"))
        object.__setattr__(self, "_needle", self.value.lower() if self.ignore_case else self.value)

    def matches(self, value: str) -> bool:
        kind = self.kind
        if kind == "regex":
            return self._regex.fullmatch(value) is not None  # type: ignore[union-attr]
        if self.ignore_case:
            value = value.lower()
        needle = self._needle
        if kind == "exact":
            return value == needle
        if kind == "prefix":
            return value.startswith(needle)
        if kind == "suffix":
            return value.endswith(needle)
        return needle in value


@dataclass(frozen=True)
class HeaderMatcher:
    """Envoy's ``config.route.v3.HeaderMatcher``.

    ``kind``: exact, prefix, suffix, contains, regex (``value`` is the string),
    present (``present`` says whether the header must be there), range
    (``range_start`` ≤ int(value) < ``range_end``). ``invert`` negates the
    result, an absent header included (as Envoy: ``present`` false inverted
    matches a present header)."""

    name: str
    kind: str = "present"
    value: str = ""
    invert: bool = False
    ignore_case: bool = False
    present: bool = True
    range_start: int = 0
    range_end: int = 0
    _string: StringMatcher | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name.lower())
        if not self.name:
            raise ConfigError("header_match.name", self.name, "a header name")
        if self.kind not in HEADER_KINDS:
            raise ConfigError(f"header_match[{self.name}]", self.kind, "one of " + ", ".join(HEADER_KINDS))
        if self.kind in STRING_KINDS:
            object.__setattr__(self, "_string", StringMatcher(self.kind, self.value, self.ignore_case))
        if self.kind == "range" and self.range_end <= self.range_start:
            raise ConfigError(f"header_match[{self.name}].range", (self.range_start, self.range_end), "start < end")

    def matches(self, headers: Headers) -> bool:
        name = self.name
        value = None if name.endswith("-bin") else headers.get(name)
        if value is not None and not isinstance(value, str):
            value = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
        kind = self.kind
        if kind == "present":
            result = (value is not None) == self.present
        elif value is None:
            result = False
        elif kind == "range":
            try:
                number = int(value)
            except ValueError:
                result = False
            else:
                result = self.range_start <= number < self.range_end
        else:
            result = self._string.matches(value)  # type: ignore[union-attr]
        return result != self.invert


@dataclass(frozen=True)
class PathMatcher:
    """The route's ``path_specifier``: prefix, path (exact) or regex (a full
    match of the path without its query string); ``case_sensitive`` as Envoy
    (default true; regex honours it as well)."""

    kind: str = "prefix"
    value: str = "/"
    case_sensitive: bool = True
    _regex: "re.Pattern[str] | None" = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.kind not in PATH_KINDS:
            raise ConfigError("path_match", self.kind, "one of " + ", ".join(PATH_KINDS))
        if self.kind == "regex":
            object.__setattr__(self, "_regex", _compile(self.value, not self.case_sensitive, "path safe_regex"))

    @property
    def key(self) -> str:
        """The value compared: lower-cased when the match ignores case."""
        return self.value if self.case_sensitive else self.value.lower()

    def matches(self, path: str) -> bool:
        if self.kind == "prefix":
            return (path if self.case_sensitive else path.lower()).startswith(self.key)
        bare = path.partition("?")[0]
        if self.kind == "path":
            return (bare if self.case_sensitive else bare.lower()) == self.key
        return self._regex.fullmatch(bare) is not None  # type: ignore[union-attr]

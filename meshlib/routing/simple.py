"""Routes from plain configuration (``MESHLIB_SERVICES__<NAME>__ROUTES``).

One route per ``;``-separated rule (or per list item in a file)::

    [condition ...] -> target

Conditions, all of which must hold (none: every call matches):

* ``prefix:/api`` ``path:/exact`` ``regex:/items/[0-9]+`` — the path (one of them);
  add ``nocase`` for a case-insensitive path match;
* ``header:NAME=VALUE`` (exact), ``header:NAME~=REGEX``, ``header:NAME^=PREFIX``,
  ``header:NAME$=SUFFIX``, ``header:NAME*=PART`` (contains), ``header:NAME`` (present);
  a leading ``!`` inverts it;
* ``fraction:0.25`` — only this share of the calls (Envoy's runtime_fraction).

Target: a service name, or a weighted split ``name=weight,name=weight``.
Example: ``header:x-model-version=v2 -> summarizer-v2; -> summarizer-v1=95,summarizer-v2=5``.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import ConfigError
from .matchers import HeaderMatcher, PathMatcher
from .model import Route, RouteAction, RouteConfig, VirtualHost

__all__ = ["parse_routes", "SYNTAX"]

SYNTAX = "rules '[prefix:/p|path:/p|regex:re] [nocase] [[!]header:name(=|~=|^=|$=|*=)value] [fraction:f] -> service[=weight,...]' separated by ';'"
_OPS = (("~=", "regex"), ("^=", "prefix"), ("$=", "suffix"), ("*=", "contains"), ("=", "exact"))


def parse_routes(value: object, name: str, service: str) -> RouteConfig | None:
    """Parse the ``ROUTES`` value of ``service`` (a string or a list of rules)
    into a one-virtual-host :class:`RouteConfig`; None for an empty value."""
    if value is None:
        return None
    if isinstance(value, str):
        rules: Sequence[object] = [r for r in value.split(";") if r.strip()]
    elif isinstance(value, (list, tuple)):
        rules = value
    else:
        raise ConfigError(name, value, SYNTAX)
    if not rules:
        return None
    routes = []
    for i, rule in enumerate(rules):
        try:
            routes.append(_rule(str(rule), name, i))
        except ConfigError as exc:
            if exc.name.startswith(name):
                raise
            raise ConfigError(f"{name} (rule {i + 1})", str(rule).strip(), SYNTAX, detail=str(exc)) from None
    return RouteConfig(service, (VirtualHost(service, ("*",), tuple(routes)),))


def _rule(text: str, name: str, i: int) -> Route:
    where = f"{name} (rule {i + 1})"
    cond, sep, target = text.partition("->")
    if not sep or not target.strip():
        raise ConfigError(where, text.strip(), SYNTAX, detail="a rule needs '-> target'")
    path = PathMatcher()
    nocase = False
    headers: list[HeaderMatcher] = []
    fraction = 1.0
    seen_path = False
    for token in cond.split():
        low = token.lower()
        if low == "nocase":
            nocase = True
        elif low.startswith(("prefix:", "path:", "regex:")):
            if seen_path:
                raise ConfigError(where, text.strip(), SYNTAX, detail="one path condition per rule")
            kind, _, val = token.partition(":")
            path, seen_path = PathMatcher(kind.lower(), val), True
        elif low.startswith(("header:", "!header:")):
            headers.append(_header(token, where))
        elif low.startswith("fraction:"):
            try:
                fraction = float(token.partition(":")[2])
            except ValueError:
                raise ConfigError(where, token, "fraction:F with F from 0 to 1") from None
        else:
            raise ConfigError(where, token, SYNTAX, detail=f"unknown condition {token!r}")
    if nocase:
        path = PathMatcher(path.kind, path.value, case_sensitive=False)
    return Route(path=path, action=_target(target.strip(), where), headers=tuple(headers), fraction=fraction, name=f"rule{i + 1}")


def _header(token: str, where: str) -> HeaderMatcher:
    invert = token.startswith("!")
    body = token.partition(":")[2]
    for op, kind in _OPS:
        idx = body.find(op)
        if idx > 0:
            return HeaderMatcher(body[:idx], kind, body[idx + len(op) :], invert=invert)
    if not body:
        raise ConfigError(where, token, "header:NAME[=VALUE]")
    return HeaderMatcher(body, "present", invert=invert)


def _target(text: str, where: str) -> RouteAction:
    if "=" not in text:
        return RouteAction(cluster=text)
    split = []
    for part in text.split(","):
        svc, _, w = part.strip().partition("=")
        try:
            split.append((svc.strip(), int(w)))
        except ValueError:
            raise ConfigError(where, text, "service=weight pairs with whole weights, e.g. v1=95,v2=5") from None
    return RouteAction(weighted=tuple(split))

"""The compiled router: authority → virtual host → first matching route → cluster.

Compiling (off the hot path) indexes each virtual host's routes by their path
matcher: exact paths in a dict, prefixes in one dict per prefix length, regex
routes in order. A lookup finds the lowest-numbered route whose path matches
with a handful of dict probes, then checks its headers and runtime fraction;
if they fail, it continues from the next route. Order is Envoy's: the first
match wins.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import replace
from typing import Callable, Iterable, Mapping

from .matchers import Headers
from .model import HashPolicy, Route, RouteAction, RouteConfig, VirtualHost

__all__ = ["Router", "HostRoutes", "Decision", "domain_match", "hash_key"]

_EMPTY: Mapping[str, str] = {}


class Decision:
    """One call's routing result: the ``route`` that matched and the ``cluster`` picked."""

    __slots__ = ("route", "cluster")

    def __init__(self, route: Route, cluster: str) -> None:
        self.route = route
        self.cluster = cluster

    def __repr__(self) -> str:
        return f"Decision(route={self.route.name or self.route.path!r}, cluster={self.cluster!r})"


class _Index:
    """Path index over one virtual host's routes (case-sensitive or not)."""

    __slots__ = ("exact", "prefixes", "lengths")

    def __init__(self) -> None:
        self.exact: dict[str, list[int]] = {}
        self.prefixes: dict[int, dict[str, list[int]]] = {}
        self.lengths: tuple[int, ...] = ()

    def add(self, kind: str, key: str, i: int) -> None:
        if kind == "path":
            self.exact.setdefault(key, []).append(i)
        else:
            self.prefixes.setdefault(len(key), {}).setdefault(key, []).append(i)

    def freeze(self) -> None:
        self.lengths = tuple(sorted(self.prefixes))

    def first(self, path: str, bare: str, start: int, best: int) -> int:
        """The lowest route index >= start below ``best`` whose path matches."""
        hit = self.exact.get(bare)
        if hit is not None:
            best = _first_from(hit, start, best)
        n = len(path)
        for length in self.lengths:
            if length > n:
                break
            hit = self.prefixes[length].get(path[:length])
            if hit is not None:
                best = _first_from(hit, start, best)
        return best


def _first_from(indices: list[int], start: int, best: int) -> int:
    if indices[0] >= start:
        return indices[0] if indices[0] < best else best
    j = bisect.bisect_left(indices, start)
    if j < len(indices) and indices[j] < best:
        return indices[j]
    return best


class HostRoutes:
    """One virtual host, compiled."""

    __slots__ = ("vhost", "routes", "_cs", "_ci", "_regex", "_plain", "_any_ci", "_picks", "_rng", "_groups")

    def __init__(self, vhost: VirtualHost, rng: random.Random) -> None:
        self.vhost = vhost
        self._rng = rng
        routes = []
        for r in vhost.routes:
            action = r.action
            if action.retry is None and vhost.retry is not None:
                action = replace(action, retry=vhost.retry)
            if not action.hash_policies and vhost.hash_policies:
                action = replace(action, hash_policies=vhost.hash_policies)
            routes.append(r if action is r.action else replace(r, action=action))
        self.routes: tuple[Route, ...] = tuple(routes)
        self._cs, self._ci = _Index(), _Index()
        self._regex: list[tuple[int, Route]] = []
        # A route that decides on its path alone (no headers, fraction 1).
        self._plain = tuple(not r.headers and r.fraction >= 1.0 and not r.query_never_matches for r in self.routes)
        self._any_ci = False
        for i, r in enumerate(self.routes):
            if r.query_never_matches:
                continue
            if r.path.kind == "regex":
                self._regex.append((i, r))
            elif r.path.case_sensitive:
                self._cs.add(r.path.kind, r.path.key, i)
            else:
                self._any_ci = True
                self._ci.add(r.path.kind, r.path.key, i)
        self._cs.freeze()
        self._ci.freeze()
        self._groups = _groups(self.routes)
        # Per route: a function picking the cluster name.
        self._picks: tuple[Callable[[], str], ...] = tuple(_picker(r.action, rng) for r in self.routes)

    def match(self, path: str, headers: Headers = _EMPTY) -> Route | None:
        d = self.decide(path, headers)
        return None if d is None else d.route

    def decide(self, path: str, headers: Headers = _EMPTY) -> Decision | None:
        """The first route matching ``path`` and ``headers``, and its cluster (None: no route)."""
        q = path.find("?")
        bare = path if q < 0 else path[:q]
        n = len(self.routes)
        start = 0
        lower = lower_bare = ""
        if self._any_ci:
            lower, lower_bare = path.lower(), bare.lower()
        while start < n:
            best = self._cs.first(path, bare, start, n)
            if self._any_ci:
                best = self._ci.first(lower, lower_bare, start, best)
            for i, r in self._regex:
                if i >= best:
                    break
                if i >= start and r.path.matches(path):
                    best = i
                    break
            if best >= n:
                return None
            if self._plain[best]:
                return Decision(self.routes[best], self._picks[best]())
            group = self._groups.get(best)
            if group is not None:  # consecutive routes told apart by one header's exact value
                header, table, end = group
                hit = table.get(headers.get(header))  # type: ignore[arg-type]
                if hit is not None:
                    return Decision(self.routes[hit], self._picks[hit]())
                start = end
                continue
            if self._conditions(self.routes[best], headers):
                return Decision(self.routes[best], self._picks[best]())
            start = best + 1
        return None

    def _conditions(self, route: Route, headers: Headers) -> bool:
        for h in route.headers:
            if not h.matches(headers):
                return False
        return route.fraction >= 1.0 or self._rng.random() < route.fraction


def _keyed(r: Route) -> str | None:
    """The header a route tests by exact value alone, or None."""
    if len(r.headers) != 1 or r.fraction < 1.0 or r.query_never_matches:
        return None
    h = r.headers[0]
    if h.kind != "exact" or h.invert or h.ignore_case or h.name.endswith("-bin"):
        return None
    return h.name


def _groups(routes: tuple[Route, ...]) -> dict[int, tuple[str, dict[str, int], int]]:
    """Runs of two or more consecutive routes with the same path matcher and one
    exact header test on the same header: first index -> (header, value -> index, end)."""
    groups: dict[int, tuple[str, dict[str, int], int]] = {}
    i, n = 0, len(routes)
    while i < n:
        name = _keyed(routes[i])
        j = i + 1
        if name is not None:
            while j < n and _keyed(routes[j]) == name and routes[j].path == routes[i].path:
                j += 1
            if j - i >= 2:
                table: dict[str, int] = {}
                for k in range(i, j):
                    table.setdefault(routes[k].headers[0].value, k)
                groups[i] = (name, table, j)
        i = j
    return groups


def _picker(action: RouteAction, rng: random.Random) -> Callable[[], str]:
    if action.cluster:
        name = action.cluster
        return lambda: name
    names = tuple(n for n, w in action.weighted if w > 0)
    cumulative: list[int] = []
    total = 0
    for _, w in action.weighted:
        if w > 0:
            total += w
            cumulative.append(total)
    if len(names) == 1:
        only = names[0]
        return lambda: only
    rand = rng.random

    def pick() -> str:
        return names[bisect.bisect_right(cumulative, rand() * total)]

    return pick


def domain_match(domains: Iterable[str], authority: str) -> tuple[int, int] | None:
    """How specifically ``domains`` match ``authority``: (rank, length), higher
    is better (exact 3, suffix wildcard 2, prefix wildcard 1, ``*`` 0), or None."""
    best: tuple[int, int] | None = None
    host = authority.lower()
    for d in domains:
        d = d.lower()
        if d == host:
            score = (3, len(d))
        elif d == "*":
            score = (0, 0)
        elif d.startswith("*") and host.endswith(d[1:]) and len(host) > len(d) - 1:
            score = (2, len(d))
        elif d.endswith("*") and host.startswith(d[:-1]) and len(host) > len(d) - 1:
            score = (1, len(d))
        else:
            continue
        if best is None or score > best:
            best = score
    return best


class Router:
    """A compiled :class:`RouteConfig`. ``host(authority)`` finds the virtual
    host (most specific domain wins; a ``:port`` that matches nothing is
    tried again without it); the result is cached per authority."""

    __slots__ = ("config", "_hosts", "_cache")

    def __init__(self, config: RouteConfig, rng: random.Random | None = None) -> None:
        self.config = config
        rng = rng or random.Random()
        self._hosts = tuple(HostRoutes(vh, rng) for vh in config.virtual_hosts)
        self._cache: dict[str, HostRoutes | None] = {}

    def host(self, authority: str) -> HostRoutes | None:
        try:
            return self._cache[authority]
        except KeyError:
            pass
        found = self._find(authority)
        if found is None and ":" in authority and not authority.endswith("]"):
            found = self._find(authority.rpartition(":")[0])
        if len(self._cache) < 1024:
            self._cache[authority] = found
        return found

    def _find(self, authority: str) -> HostRoutes | None:
        best, best_score = None, None
        for hr in self._hosts:
            score = domain_match(hr.vhost.domains, authority)
            if score is not None and (best_score is None or score > best_score):
                best, best_score = hr, score
        return best

    def decide(self, authority: str, path: str, headers: Headers = _EMPTY) -> Decision | None:
        hr = self.host(authority)
        return None if hr is None else hr.decide(path, headers)


def hash_key(policies: tuple[HashPolicy, ...], path: str, headers: Headers) -> str | None:
    """The request's hash key under Envoy's ``hash_policy`` list: the values of
    the policies that yield one, joined (a terminal one stops the chain); None
    when none yields (the cluster then hashes at random, as gRFC A42)."""
    parts: list[str] = []
    for p in policies:
        if p.kind == "header":
            value = None if p.name.endswith("-bin") else headers.get(p.name)
        else:
            value = _query_param(path, p.name)
        if value is None:
            continue
        parts.append(value if isinstance(value, str) else ",".join(value))
        if p.terminal:
            break
    return "\x00".join(parts) if parts else None


def _query_param(path: str, name: str) -> str | None:
    _, sep, query = path.partition("?")
    if not sep:
        return None
    for pair in query.split("&"):
        k, _, v = pair.partition("=")
        if k == name:
            return v
    return None

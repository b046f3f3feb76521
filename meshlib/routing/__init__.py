"""Routing: pure route matching in front of the clusters (Envoy's RDS model).

``model`` holds the frozen route configuration, ``matchers`` the path and
header matchers, ``router`` the compiled lookup, ``simple`` the compact
configuration syntax for routes without a control plane.
"""

from .matchers import HeaderMatcher, PathMatcher, StringMatcher
from .model import HashPolicy, MirrorPolicy, Route, RouteAction, RouteConfig, VirtualHost
from .router import Decision, HostRoutes, Router, domain_match, hash_key
from .simple import parse_routes

__all__ = [
    "Decision",
    "HashPolicy",
    "HeaderMatcher",
    "HostRoutes",
    "MirrorPolicy",
    "PathMatcher",
    "Route",
    "RouteAction",
    "RouteConfig",
    "Router",
    "StringMatcher",
    "VirtualHost",
    "domain_match",
    "hash_key",
    "parse_routes",
]

"""Load reports as ``mesh.endpoints()`` shows them: each endpoint with its latest report and its age."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from ...balancing.load import report_view
from ...endpoint import EndpointSnapshot

__all__ = ["with_reports"]


def with_reports(cluster: Any, now: float) -> EndpointSnapshot:
    """The cluster's view (health and ejections folded in), each endpoint
    carrying ``load``: its host's latest report at ``now`` (None: none yet)."""
    view = cluster.view
    hosts = {h.key: h for h in cluster.hosts}
    eps = []
    for ep in view:
        host = hosts.get(ep.key)
        shown = None if host is None else report_view(host.load, now)
        eps.append(replace(ep, load=None if shown is None else MappingProxyType(shown)))
    return EndpointSnapshot(view.service, eps, view.version, view.source)

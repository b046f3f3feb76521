"""Discovery by capability: keep the endpoints that carry given tags and metadata.

Works on any source's snapshots (static, file, dns, consul, etcd): an
endpoint matches when it has every tag asked for and, for every metadata
key asked for, exactly that value. Per-service filters in the configuration
(``FILTER_TAGS``, ``FILTER_META``) apply before the balancer sees the
snapshot; ``mesh.endpoints(name, tags=..., meta=...)`` applies more on top.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from ..endpoint import Endpoint, EndpointSnapshot

__all__ = ["matches", "filter_snapshot"]


def matches(ep: Endpoint, tags: Iterable[str] = (), meta: Mapping[str, str] | None = None) -> bool:
    if any(tag not in ep.tags for tag in tags):
        return False
    return all(ep.metadata.get(k) == v for k, v in (meta or {}).items())


def filter_snapshot(snapshot: EndpointSnapshot, tags: Iterable[str] = (), meta: Mapping[str, str] | None = None) -> EndpointSnapshot:
    """A snapshot of the matching endpoints, same service, version and source
    (the same object when nothing is asked for)."""
    tags = (tags,) if isinstance(tags, str) else tuple(tags)
    if not tags and not meta:
        return snapshot
    kept = [ep for ep in snapshot.endpoints if matches(ep, tags, meta)]
    return EndpointSnapshot(snapshot.service, kept, version=snapshot.version, source=snapshot.source)

"""Build the consul:// or etcd:// resolver from the configuration."""

from __future__ import annotations

import time
from typing import Callable

from typing import TYPE_CHECKING

from ..config import MeshConfig

if TYPE_CHECKING:  # pragma: no cover
    from .consul import ConsulResolver
    from .etcd import EtcdResolver


def registry_resolver(
    cfg: MeshConfig,
    *,
    exclude: frozenset[str] = frozenset(),
    now: Callable[[], float] = time.monotonic,
) -> "ConsulResolver | EtcdResolver":
    """The resolver of ``cfg.discovery``. Services declared in the
    configuration are always watched; services with static ``ENDPOINTS``
    (``exclude``) never are: their configuration wins."""
    scheme, _, rest = cfg.discovery.partition("://")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    declared = frozenset(cfg.services) - exclude
    if scheme == "consul":
        from .consul import ConsulResolver

        return ConsulResolver(host, int(port), cfg.registry, declared=declared, exclude=exclude, now=now)
    from .etcd import EtcdResolver

    return EtcdResolver(host, int(port), cfg.registry, declared=declared, exclude=exclude, now=now)

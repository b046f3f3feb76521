"""Register in etcd: ``<prefix>/<service>/<id>`` -> JSON, attached to a lease.

The key is written under a lease of ``ceil(MESHLIB_REGISTRY_TTL)`` seconds,
kept alive every TTL/3. If the process dies, etcd deletes the key when the
lease expires. If a keep-alive finds the lease gone (etcd was unreachable for
longer than the TTL, or the lease was revoked), meshlib grants a new lease
and writes the key again. With a ``health`` callable or URL, a change of
health rewrites the value with ``"healthy": false`` (or true), so watchers
stop (or resume) sending traffic while the key stays. ``close()`` revokes the
lease, which deletes the key at once.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from ..discovery.etcd_client import EtcdClient
from ..discovery.registry import RegistryUnavailable
from .base import Health, Instance, Registration

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RegistryConfig


class EtcdRegistration(Registration):
    kind = "etcd"

    def __init__(self, instance: Instance, cfg: RegistryConfig, host: str, port: int, health: Health = None) -> None:
        super().__init__(instance, cfg, health)
        self.key = f"{cfg.etcd_prefix}/{instance.service}/{instance.id}"
        self.lease_id = 0
        self._host, self._port = host, port
        self._client: EtcdClient | None = None
        self._written_healthy: bool | None = None

    def _connect(self) -> EtcdClient:
        if self._client is None:
            self._client = EtcdClient.from_config(self._host, self._port, self.cfg)
        return self._client

    def _reset(self) -> None:
        """Drop the client after a failure: the next call connects (and authenticates) again."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def value(self, healthy: bool) -> str:
        inst = self.instance
        return json.dumps(
            {
                "address": inst.hostport,
                "weight": inst.weight,
                "zone": inst.zone,
                "priority": inst.priority,
                "tags": list(inst.tags),
                "metadata": dict(inst.meta),
                "healthy": healthy,
            },
            sort_keys=True,
        )

    def _register(self) -> None:
        try:
            client = self._connect()
            lease = client.grant(max(1, math.ceil(self.ttl)))
            client.put(self.key, self.value(self.healthy), lease=lease)
        except RegistryUnavailable:
            self._reset()
            raise
        self.lease_id = lease
        self._written_healthy = self.healthy

    def _refresh(self, healthy: bool) -> bool:
        try:
            client = self._connect()
            if client.keepalive(self.lease_id) <= 0:
                return False
            if healthy != self._written_healthy:
                client.put(self.key, self.value(healthy), lease=self.lease_id)
                self._written_healthy = healthy
        except RegistryUnavailable:
            self._reset()
            raise
        return True

    def _deregister(self) -> None:
        try:
            client = self._connect()
            if self.lease_id:
                client.revoke(self.lease_id)
            client.delete(self.key)
        except RegistryUnavailable:
            self._reset()
            raise

    def _release(self) -> None:
        self._reset()

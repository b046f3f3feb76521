"""Register with the local Consul agent (``PUT /v1/agent/service/register``).

Without a health URL the service gets a TTL check (``CheckID
service:<id>``, ``TTL`` = ``MESHLIB_REGISTRY_TTL``, starting ``passing``)
that meshlib refreshes every TTL/3 with ``PUT /v1/agent/check/pass/:id``
(or ``/fail/`` while a ``health`` callable says unhealthy). If the process
dies, the check goes critical after the TTL, which drops the instance from
``?passing`` answers at once, and Consul deregisters it after
``DeregisterCriticalServiceAfter`` (``MESHLIB_CONSUL_DEREGISTER_AFTER``, at
least 1m). With a health URL the agent runs an HTTP check on it every TTL/3
instead, and meshlib checks every TTL/3 that the agent still knows the
service. Either way, a registration the agent lost (an agent restart, a
reaped service: ``CheckID ... does not have associated TTL`` or a 404) is
registered again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import consul
import requests

from ..discovery.registry import RegistryUnavailable
from ..discovery.consul import describe, make_client
from .base import Health, Instance, Registration

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RegistryConfig


def _go_duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 or seconds != int(seconds) else f"{int(seconds)}s"


class ConsulRegistration(Registration):
    kind = "consul"

    def __init__(self, instance: Instance, cfg: RegistryConfig, host: str, port: int, health: Health = None) -> None:
        super().__init__(instance, cfg, health)
        self.target = f"{host}:{port}"
        self.check_id = f"service:{instance.id}"
        self._client, _ = make_client(host, port, cfg)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (requests.RequestException, consul.ConsulException) as exc:
            raise RegistryUnavailable(f"consul {self.target}: {what} {self.instance.id}: {describe(exc)}") from None

    def _check(self) -> dict[str, Any]:
        check: dict[str, Any] = {
            "CheckID": self.check_id,
            "DeregisterCriticalServiceAfter": _go_duration(self.cfg.consul_deregister_after),
        }
        if isinstance(self.health, str):
            check.update(Name="meshlib: HTTP health", HTTP=self.health, Interval=_go_duration(self.interval), Timeout=_go_duration(self.cfg.registry_timeout))
        else:
            check.update(Name="meshlib: heartbeat", TTL=_go_duration(self.ttl), Status="passing" if self.healthy else "critical")
        return check

    def _register(self) -> None:
        inst = self.instance
        meta = dict(inst.meta)
        if inst.zone:
            meta.setdefault("zone", inst.zone)
        if inst.priority:
            meta.setdefault("priority", str(inst.priority))
        self._call(
            "registering",
            self._client.agent.service.register,
            inst.service,
            service_id=inst.id,
            address=inst.address or None,
            port=inst.port,
            tags=list(inst.tags) or None,
            meta=meta or None,
            weights={"Passing": inst.weight, "Warning": 1},
            check=self._check(),
            replace_existing_checks=True,
        )

    def _refresh(self, healthy: bool) -> bool:
        if isinstance(self.health, str):
            # The agent runs the HTTP check; make sure it still has the service.
            try:
                self._client.agent.service_definition(self.instance.id)
            except consul.NotFound:
                return False
            except (requests.RequestException, consul.ConsulException) as exc:
                if " 404" in str(exc) or str(exc).startswith("404"):
                    return False
                raise RegistryUnavailable(f"consul {self.target}: reading {self.instance.id}: {describe(exc)}") from None
            return True
        update = self._client.agent.check.ttl_pass if healthy else self._client.agent.check.ttl_fail
        try:
            update(self.check_id, notes=None if healthy else "meshlib: the health callable reported unhealthy")
        except consul.NotFound:
            return False
        except consul.ConsulException as exc:
            text = str(exc)
            if "does not have associated TTL" in text or "Unknown check" in text or text.startswith("404"):
                return False
            raise RegistryUnavailable(f"consul {self.target}: heartbeat {self.instance.id}: {describe(exc)}") from None
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"consul {self.target}: heartbeat {self.instance.id}: {describe(exc)}") from None
        return True

    def _deregister(self) -> None:
        self._call("deregistering", self._client.agent.service.deregister, self.instance.id)

    def _release(self) -> None:
        self._client.http.session.close()

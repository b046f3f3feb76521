"""Self-registration: ``mesh.register(name, port=...)`` puts this process in the
registry named by ``MESHLIB_DISCOVERY`` (consul:// or etcd://) and keeps it there
until the returned :class:`Registration` is closed. See docs/registries.md."""

from __future__ import annotations

from types import MappingProxyType
from typing import Iterable, Mapping

from ..config import MeshConfig, _check_service_name
from ..endpoint import _check_priority, _check_weight
from ..errors import ConfigError
from .base import Health, Instance, Registration, default_instance_id, local_address_towards

__all__ = ["Registration", "Instance", "register"]


def register(
    config: MeshConfig,
    name: str,
    *,
    port: int,
    address: str | None = None,
    tags: Iterable[str] = (),
    meta: Mapping[str, str] | None = None,
    health: Health = None,
    weight: int = 1,
    zone: str = "",
    priority: int = 0,
    instance_id: str | None = None,
) -> Registration:
    """Validate, build the registry's Registration, register, and return it."""
    scheme, _, rest = config.discovery.partition("://")
    if scheme not in ("consul", "etcd"):
        raise ConfigError(
            "MESHLIB_DISCOVERY",
            config.discovery,
            "consul://host:port or etcd://host:port to register with (static, dns and file:// have no registry)",
        )
    service = _check_service_name(name, "register(name)")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError("register(port)", port, "a port from 1 to 65535")
    if health is not None and not callable(health) and not (isinstance(health, str) and health.startswith(("http://", "https://"))):
        raise ConfigError("register(health)", health, "None, a callable returning True when healthy, or an http(s):// URL")
    tag_list = [tags] if isinstance(tags, str) else list(tags)
    if not all(isinstance(t, str) and t for t in tag_list):
        raise ConfigError("register(tags)", tags, "a list of non-empty strings")
    meta_map = dict(meta or {})
    if not all(isinstance(k, str) and k and isinstance(v, str) for k, v in meta_map.items()):
        raise ConfigError("register(meta)", meta, "a mapping of non-empty string keys to string values")
    host, _, reg_port = rest.rpartition(":")
    host = host.strip("[]")
    if address is None:
        address = "" if scheme == "consul" else local_address_towards(host, int(reg_port))
    instance = Instance(
        service=service,
        id=instance_id or default_instance_id(service, port),
        address=address,
        port=port,
        tags=tuple(tag_list),
        meta=MappingProxyType(meta_map),
        weight=_check_weight(weight, "register(weight)"),
        zone=zone,
        priority=_check_priority(priority, "register(priority)"),
    )
    if scheme == "consul":
        from .consul import ConsulRegistration

        reg: Registration = ConsulRegistration(instance, config.registry, host, int(reg_port), health)
    else:
        from .etcd import EtcdRegistration

        reg = EtcdRegistration(instance, config.registry, host, int(reg_port), health)
    return reg.start()

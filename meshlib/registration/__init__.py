"""Self-registration: ``mesh.register(name, port=...)`` puts this process in the
registry named by ``MESHLIB_DISCOVERY`` (consul:// or etcd://) and keeps it there
until the returned :class:`Registration` is closed. See docs/registries.md."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Iterable, Mapping

from ..discovery.schemes import join_words, registry_target, schemes
from ..endpoint import check_priority, check_weight
from ..errors import ConfigError
from ..names import check_service_name
from .backends import Backend, backends
from .base import Health, Instance, Registration, default_instance_id

if TYPE_CHECKING:  # pragma: no cover
    from ..config import MeshConfig

__all__ = ["Registration", "Instance", "register", "backend_for"]


def backend_for(discovery: str) -> Backend:
    """The registration backend of a ``MESHLIB_DISCOVERY`` value; ConfigError
    if its scheme has no registry to write to."""
    name = discovery.partition("://")[0].lower()
    found = backends().get(name) if "://" in discovery else None
    if found is None:
        known = schemes()
        writable = [known[b].form if b in known else f"{b}://host:port" for b in backends()]
        others = [s.label for n, s in known.items() if n not in backends()]
        raise ConfigError(
            "MESHLIB_DISCOVERY",
            discovery,
            f"{join_words(writable)} to register with ({join_words(others, 'and')} have no registry)",
        )
    return found


def register(
    config: "MeshConfig",
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
    backend = backend_for(config.discovery)
    service = check_service_name(name, "register(name)")
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
    _, host, reg_port = registry_target(config.discovery)
    if address is None:
        address = backend.default_address(host, reg_port)
    instance = Instance(
        service=service,
        id=instance_id or default_instance_id(service, port),
        address=address,
        port=port,
        tags=tuple(tag_list),
        meta=MappingProxyType(meta_map),
        weight=check_weight(weight, "register(weight)"),
        zone=zone,
        priority=check_priority(priority, "register(priority)"),
    )
    return backend.create(instance, config.registry, host, reg_port, health).start()

"""Registration backends, registered by the discovery scheme they belong to.

A :class:`Backend` builds the :class:`Registration` of one instance for its
registry and says which address an instance gets when ``register()`` is not
told one. ``mesh.register()`` and the CLI read this registry; a registry that
can be written to is one module with its ``Registration`` subclass plus one
:func:`register_backend` line below. Builders import their client lazily
(py-consul, etcd3 and grpc are paid for only when used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from .base import Health, Instance, Registration, local_address_towards

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RegistryConfig

__all__ = ["Backend", "register_backend", "backends"]

#: ``create(instance, registry config, registry host, registry port, health)``.
Create = Callable[[Instance, "RegistryConfig", str, int, Health], Registration]


@dataclass(frozen=True)
class Backend:
    #: The ``MESHLIB_DISCOVERY`` scheme of the registry (``consul``, ``etcd``).
    scheme: str
    create: Create
    #: ``default_address(registry host, registry port)``: the address registered
    #: when ``register()`` is given none ("" lets the registry decide).
    default_address: Callable[[str, int], str]


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    if backend.scheme in _BACKENDS:
        raise ValueError(f"registration backend {backend.scheme!r} is already registered")
    _BACKENDS[backend.scheme] = backend
    return backend


def backends() -> Mapping[str, Backend]:
    """Every registration backend by scheme, in registration order."""
    return dict(_BACKENDS)


def _consul(instance: Instance, cfg: "RegistryConfig", host: str, port: int, health: Health) -> Registration:
    from .consul import ConsulRegistration

    return ConsulRegistration(instance, cfg, host, port, health)


def _etcd(instance: Instance, cfg: "RegistryConfig", host: str, port: int, health: Health) -> Registration:
    from .etcd import EtcdRegistration

    return EtcdRegistration(instance, cfg, host, port, health)


def _agents_address(host: str, port: int) -> str:
    """Consul: no address, so the agent registers its node's address."""
    return ""


register_backend(Backend("consul", _consul, _agents_address))
register_backend(Backend("etcd", _etcd, local_address_towards))

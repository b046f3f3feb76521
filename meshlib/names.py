"""Service names: the one spelling meshlib compares, and what a name may be.

Every layer that reads a service name (configuration, discovery, registration,
the mesh) uses these, so a name from an environment variable, a file, Consul's
catalog or an etcd key means the same service everywhere.
"""

from __future__ import annotations

import re

from .errors import ConfigError

__all__ = ["SERVICE_NAME_RE", "canonical_service", "is_service_name", "check_service_name"]

#: A canonical service name: lower-case letters, digits, '.', '-' and '_' inside.
SERVICE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


def canonical_service(name: str) -> str:
    """The one spelling of a service name: lower case, ``_`` written as ``-``.

    ``INVENTORY_API`` (from an environment variable), ``inventory_api`` and
    ``Inventory-Api`` all name the service ``inventory-api``.
    """
    return name.strip().lower().replace("_", "-")


def is_service_name(name: str) -> bool:
    """True when ``name`` is already a canonical service name."""
    return bool(SERVICE_NAME_RE.match(name))


def check_service_name(name: str, where: str) -> str:
    """``name`` in its canonical spelling; ConfigError naming ``where`` if it cannot be one."""
    cname = canonical_service(name)
    if not SERVICE_NAME_RE.match(cname):
        raise ConfigError(where, name, "a service name of letters, digits, '-', '_' and '.'")
    return cname

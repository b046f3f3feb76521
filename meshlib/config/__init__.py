"""Configuration: environment, file and keyword sources -> one validated, immutable config.

Precedence, lowest first: the file named by ``MESHLIB_CONFIG`` (YAML or TOML),
``MESHLIB_*`` environment variables, then ``Mesh(config=...)``. Global keys are
``MESHLIB_<KEY>``; per-service keys ``MESHLIB_SERVICES__<SERVICE>__<KEY>``. Every
value is checked at start-up, and a bad one raises :class:`ConfigError` naming
where it came from, the value (never a secret) and what is accepted.

One concept per module: ``parsers`` (values), ``schemes`` (MESHLIB_DISCOVERY),
``keys`` (the key table: each key's type, default, doc, example and source
written once), ``model`` (``ServiceConfig``, ``RegistryConfig``), ``sources``
(environment, file, mapping), ``load`` (``MeshConfig``, ``load_config``),
``docs`` (docs/configuration.md), ``check`` (``meshlib config check``) and
``redact`` (what a message may show).
"""

from __future__ import annotations

from .docs import DEFAULT_SOURCES, render_markdown
from .keys import DEFAULT_RETRY, ENV_PREFIX, GLOBAL_KEYS, KEYS, LB_POLICIES, SERVICE_KEYS, SERVICES_PREFIX, Key
from .load import MeshConfig, load_config
from .model import RegistryConfig, ServiceConfig
from .parsers import SERVICE_RE, canonical_service, check_service_name, parse_duration
from .schemes import REGISTRY_PORTS, parse_discovery
from .sources import parse_document

#: Old private spellings other modules import.
_SERVICE_RE = SERVICE_RE
_check_service_name = check_service_name

__all__ = ["MeshConfig", "ServiceConfig", "RegistryConfig", "KEYS", "Key", "canonical_service", "load_config", "parse_duration"]

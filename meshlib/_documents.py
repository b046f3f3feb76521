"""Parse a YAML, JSON or TOML document (the configuration file, the endpoints file)."""

from __future__ import annotations

import json
from typing import Any, Mapping

from .errors import ConfigError

__all__ = ["parse_document"]


def parse_document(data: bytes, path: str, origin: str) -> Mapping[str, Any]:
    """Parse YAML, JSON or TOML (by file extension; YAML also reads JSON).

    An empty document is an empty mapping. Anything that does not parse, or
    whose top level is not a mapping, raises :class:`ConfigError` naming
    ``origin`` (the setting that named the file)."""
    try:
        if path.endswith(".toml"):
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            doc: object = tomllib.loads(data.decode("utf-8"))
        elif path.endswith(".json"):
            doc = json.loads(data.decode("utf-8"))
        else:
            import yaml

            doc = yaml.load(data.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception as exc:  # every parser has its own error type (and RecursionError, MemoryError on hostile input)
        raise ConfigError(origin, path, "a well-formed YAML, JSON or TOML document", detail=(str(exc).splitlines() or [type(exc).__name__])[0]) from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(origin, path, "a document whose top level is a mapping of keys")
    return doc

"""Where raw values come from: the environment, a YAML/TOML/JSON file, a mapping.

Each source is read into :class:`Raw`: global and per-service keys, each as
``(value, where)`` where ``where`` is the variable or file key the user wrote.
Names are checked here (unknown keys, keys in the wrong scope, near misses of
the ``MESHLIB_`` prefix); values are parsed later, by ``load``.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .._documents import parse_document
from ..errors import ConfigError
from .keys import ENV_PREFIX, GLOBAL_KEYS, KEYS, SERVICE_KEYS, SERVICES_PREFIX
from .parsers import check_service_name
from .redact import HIDDEN, safe_text, shown

__all__ = ["Raw", "UnknownKeyError", "read_env", "read_file", "read_mapping", "parse_document", "CONFIG_VAR"]

CONFIG_VAR = "MESHLIB_CONFIG"
_DOCS_HINT = "`meshlib config-docs` lists every key"

#: key -> (value, where it came from)
Values = dict[str, tuple[object, str]]


@dataclass
class Raw:
    """Keys read so far, by scope; later reads override earlier ones."""

    glob: Values = field(default_factory=dict)
    services: dict[str, Values] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


class UnknownKeyError(ConfigError):
    """A variable or key meshlib does not know, or one set in the wrong place.

    The value is never shown: a typo in a secret's name must not print the secret.
    """

    def __init__(self, where: str, message: str) -> None:
        Exception.__init__(self, f"{where}: {message}")
        self.name = where
        self.value = HIDDEN
        self.accepted = message


# ----------------------------------------------------------------- key names


def _close(word: str, names: list[str]) -> list[str]:
    return difflib.get_close_matches(word, names, n=3, cutoff=0.6)


def _spell(names: list[str], upper: bool) -> str:
    return " or ".join(n.upper() if upper else n for n in names)


def _check_key(key: str, where: str, *, service: bool, upper: bool) -> None:
    """Raise UnknownKeyError unless ``key`` may be set in this scope."""
    k = KEYS.get(key)
    allowed = SERVICE_KEYS if service else GLOBAL_KEYS
    if k is not None and k in allowed:
        return
    shown_key = key.upper() if upper else key
    if k is not None and service:
        target = k.env if upper else key
        raise UnknownKeyError(where, f"{shown_key} is a global key, not a per-service key; set {target}")
    if k is not None:
        target = f"{SERVICES_PREFIX}<SERVICE>__{key.upper()}" if upper else f"services.<service>.{key}"
        raise UnknownKeyError(where, f"{shown_key} is a per-service key; set {target}")
    close = _close(key, [x.name for x in allowed])
    hint = f"did you mean {_spell(close, upper)}?" if close else _DOCS_HINT
    raise UnknownKeyError(where, f"unknown {'per-service' if service else 'global'} key {shown_key}; {hint}")


_SERVICE_KEY_ALT = "|".join(sorted((re.escape(k.name.upper()) for k in SERVICE_KEYS), key=len, reverse=True))
_NEAR_SERVICE_VAR = re.compile(rf"^MESHLIB_+SERVICES?_+(?P<svc>[A-Z0-9._-]+?)_+(?P<key>{_SERVICE_KEY_ALT})$")


def _suggest_var(var: str) -> str | None:
    """The variable a near miss was probably meant to be, if it is a valid one."""
    up = var.upper()
    m = _NEAR_SERVICE_VAR.match(up)
    if m and m.group("svc").strip("_"):
        return f"{SERVICES_PREFIX}{m.group('svc').strip('_')}__{m.group('key')}"
    key = re.sub(r"^MESHLIB_+", "", up).lower()
    if key in KEYS and KEYS[key] in GLOBAL_KEYS:
        return ENV_PREFIX + key.upper()
    return None


# ----------------------------------------------------------------- the environment


def read_env(environ: Mapping[str, str], raw: Raw) -> None:
    """``MESHLIB_<KEY>`` and ``MESHLIB_SERVICES__<SERVICE>__<KEY>`` variables into ``raw``."""
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX):
            if re.match(r"^meshlib[_-]", var, re.IGNORECASE):
                fix = _suggest_var(var)
                hint = f"did you mean {fix}?" if fix else f"variables are upper-case MESHLIB_<KEY>; {_DOCS_HINT}"
                raise UnknownKeyError(var, f"not a meshlib variable (names are case-sensitive); {hint}")
            continue
        if var == CONFIG_VAR:
            continue
        if var.startswith(SERVICES_PREFIX):
            sname, sep, key = var[len(SERVICES_PREFIX) :].partition("__")
            if not sep or not sname or not key:
                fix = _suggest_var(var)
                hint = f"; did you mean {fix}?" if fix and fix != var else ""
                raise UnknownKeyError(var, f"unknown variable: per-service variables are named MESHLIB_SERVICES__<SERVICE>__<KEY>{hint}")
            cname = check_service_name(sname, var)
            _check_key(key.lower(), var, service=True, upper=True)
            raw.services.setdefault(cname, {})[key.lower()] = (value, var)
        else:
            key = var[len(ENV_PREFIX) :].lower()
            if key not in KEYS:
                fix = _suggest_var(var)
                if fix and fix != var:
                    raise UnknownKeyError(var, f"unknown key {key.upper()}; did you mean {fix}?")
            _check_key(key, var, service=False, upper=True)
            raw.glob[key] = (value, var)
    if any(k.startswith(ENV_PREFIX) for k in environ):
        raw.sources.append("environment")


# ----------------------------------------------------------------- files and mappings


def read_file(path: str, raw: Raw) -> None:
    """The file named by MESHLIB_CONFIG into ``raw``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as exc:
        raise ConfigError(CONFIG_VAR, path, "a readable YAML (.yaml/.yml) or TOML (.toml) file", detail=str(exc)) from None
    read_mapping(parse_document(data, path, CONFIG_VAR), path, raw)


def read_mapping(data: Mapping[Any, Any], origin: str, raw: Raw) -> None:
    """A file's document or ``Mesh(config=...)``'s mapping into ``raw``."""
    for key, value in data.items():
        k = safe_text(key).lower()
        if k == "services":
            where = f"services ({origin})"
            if not isinstance(value, Mapping):
                raise ConfigError(where, shown("services", value), "a mapping of service name to its keys")
            for sname, skeys in value.items():
                base = f"services.{safe_text(sname)}"
                cname = check_service_name(safe_text(sname), f"{base} ({origin})")
                if not isinstance(skeys, Mapping):
                    raise ConfigError(f"{base} ({origin})", shown(sname, skeys), "a mapping of keys, e.g. {endpoints: [...]}")
                values = raw.services.setdefault(cname, {})
                for sk, sv in skeys.items():
                    skl = safe_text(sk).lower()
                    where = f"{base}.{safe_text(sk)} ({origin})"
                    _check_key(skl, where, service=True, upper=False)
                    values[skl] = (sv, where)
        else:
            where = f"{safe_text(key)} ({origin})"
            _check_key(k, where, service=False, upper=False)
            raw.glob[k] = (value, where)
    raw.sources.append(origin)

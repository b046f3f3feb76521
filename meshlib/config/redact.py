"""What of a configuration value an error message or a dump may show.

Secrets never appear: no value of a key whose name suggests a secret (token,
password, secret, key, credential, auth), no value of an unknown variable (a
typo in a secret's name would print the secret), and no URL's userinfo,
query or fragment.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["HIDDEN", "is_secret_name", "redact_url", "leaks", "shown", "safe_text"]

_SECRET_WORDS = ("token", "passw", "passwd", "pwd", "secret", "key", "credential", "auth", "cookie")
_URL_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s,;<>]*)")


class _Hidden:
    """Stands in for a value that must not be shown; its repr says so."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


HIDDEN: Any = _Hidden()

_LONGEST = 200  # characters of a value a message shows


class _Shown(str):
    """Text that stands in for a value too large to show; repr without quotes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def safe_text(value: object) -> str:
    """``str(value)``, whatever the value (an int of 5,000 digits cannot be printed)."""
    try:
        return str(value)
    except ValueError:
        return f"<a number of about {int(value.bit_length() * 0.30103)} digits>" if isinstance(value, int) else "<unprintable>"


def is_secret_name(name: object) -> bool:
    """Whether a variable or key name suggests its value is a secret."""
    low = str(name).lower()
    return any(word in low for word in _SECRET_WORDS)


def _redact_one(m: re.Match[str]) -> str:
    rest = m.group("rest")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "<credentials hidden>@" + authority.rpartition("@")[2]
    rest = authority + slash + path
    for mark in ("?", "#"):
        head, found, tail = rest.partition(mark)
        if found and tail:
            rest = head + mark + "<hidden>"
    return m.group("scheme") + rest


def redact_url(text: str) -> str:
    """``text`` with every URL's ``user:password@``, query and fragment hidden."""
    return _URL_RE.sub(_redact_one, text) if "://" in text else text


def leaks(message: str) -> bool:
    """Whether ``message`` shows a URL's userinfo, query or fragment."""
    neutral = message.replace("'", " ").replace('"', " ")
    return redact_url(neutral) != neutral


def shown(name: object, value: object, _depth: int = 0) -> object:
    """``value`` as an error message may show it, for a setting named ``name``:
    no secret, no URL credentials, nothing huge."""
    if is_secret_name(safe_text(name)) or _depth > 8:
        return HIDDEN
    if isinstance(value, str):
        value = redact_url(value)
        return value if len(value) <= _LONGEST else _Shown(f"{value[:_LONGEST]!r}... ({len(value)} characters)")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**50:
        return _Shown(f"<a number of about {int(value.bit_length() * 0.30103)} digits>")
    if isinstance(value, Mapping):
        return {shown("", k, _depth + 1): shown(k, v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(shown("", v, _depth + 1) for v in value)
    return value

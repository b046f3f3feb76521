"""What never leaves the process: credentials in headers, URLs and dumps.

``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie`` and
any configured header names are replaced by ``[redacted]``; ``user:password@``
is removed from URLs (and query strings are dropped wherever a URL is shown);
configuration dumps hide every key that names a secret.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["REDACTED", "SENSITIVE_HEADERS", "redact_headers", "scrub_url", "redact_mapping", "is_secret_key"]

REDACTED = "[redacted]"
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_WORDS = ("password", "passwd", "secret", "token", "credential", "private_key", "api_key", "apikey", "authorization", "cookie")


def redact_headers(headers: Iterable[tuple[str, str]], extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """``{lower-case name: value}`` with sensitive values replaced."""
    out: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        out[low] = REDACTED if low in SENSITIVE_HEADERS or low in extra else str(value)
    return out


def scrub_url(url: str, *, keep_query: bool = False) -> str:
    """``url`` without ``user:password@`` (and, unless ``keep_query``, without
    its query string and fragment)."""
    sep = url.find("://")
    if sep >= 0:
        start = sep + 3
        end = len(url)
        for ch in "/?#":
            j = url.find(ch, start)
            if 0 <= j < end:
                end = j
        at = url.rfind("@", start, end)
        if at >= 0:
            url = url[:start] + url[at + 1 :]
    if not keep_query:
        for ch in "?#":
            j = url.find(ch)
            if j >= 0:
                url = url[:j]
    return url


def is_secret_key(name: str) -> bool:
    low = name.lower()
    return any(word in low for word in _SECRET_WORDS) or low.endswith(("_key", "_password"))


def redact_mapping(data: Any, extra: frozenset[str] = frozenset()) -> Any:
    """A JSON-able copy of ``data`` with the values of secret keys replaced
    and URL credentials removed (recursively)."""
    if isinstance(data, Mapping):
        out = {}
        for k, v in data.items():
            key = str(k)
            if (is_secret_key(key) or key.lower() in extra) and v not in ("", None, False):
                out[key] = REDACTED
            else:
                out[key] = redact_mapping(v, extra)
        return out
    if isinstance(data, (list, tuple, set, frozenset)):
        return [redact_mapping(v, extra) for v in data]
    if isinstance(data, str):
        return scrub_url(data, keep_query=True) if "://" in data and "@" in data else data
    if isinstance(data, (int, float, bool)) or data is None:
        return data
    return redact_mapping(str(data), extra)

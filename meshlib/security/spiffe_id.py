"""SPIFFE IDs: parsing by the SPIFFE ID standard, the one URI SAN of an
X.509-SVID, and the matcher behind ``TLS_SPIFFE_IDS`` / ``ALLOWED_CALLERS``.

A SPIFFE ID is ``spiffe://<trust domain>/<path>``: a lower-case trust domain of
letters, digits, ``.``, ``-`` and ``_``; path segments of letters, digits,
``.``, ``-`` and ``_``, none empty, ``.`` or ``..``; no port, user, query or
fragment (github.com/spiffe/spiffe, standards/SPIFFE-ID.md). An X.509-SVID
carries exactly one URI SAN, its SPIFFE ID (standards/X509-SVID.md).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import MeshError

__all__ = ["IdMatcher", "PeerIdentityError", "parse_spiffe_id", "spiffe_id_of", "uri_sans", "parse_id_list"]

_TD = re.compile(r"^[a-z0-9._-]+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_LENGTH = 2048


class PeerIdentityError(MeshError, ssl.SSLCertVerificationError):
    """The peer's certificate is not one of the identities it may present.

    Raised inside the TLS handshake, before any byte of the request is sent;
    it is an ``ssl.SSLError`` too, so clients treat it as a failed handshake
    (never as a refused connection to retry on the same endpoint)."""

    def __init__(self, expected: str, presented: str, *, side: str = "server") -> None:
        self.expected = expected
        self.presented = presented
        MeshError.__init__(
            self,
            f"the {side} presented {presented or 'no SPIFFE ID'}, but {expected} is required; "
            "check the peer's SVID, or the TLS_SPIFFE_IDS / ALLOWED_CALLERS setting",
        )

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def parse_spiffe_id(text: str, *, allow_trust_domain: bool = False) -> str:
    """``text`` if it is a valid SPIFFE ID (or, with ``allow_trust_domain``, a
    bare ``spiffe://trust.domain``); else ``ValueError`` saying why."""
    if not isinstance(text, str) or not text:
        raise ValueError("a SPIFFE ID is a non-empty string")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"a SPIFFE ID is at most {MAX_LENGTH} bytes")
    if not text.startswith("spiffe://"):
        raise ValueError("a SPIFFE ID starts with spiffe:// (lower case)")
    rest = text[len("spiffe://") :]
    td, slash, path = rest.partition("/")
    if not td or not _TD.match(td):
        raise ValueError("the trust domain has only lower-case letters, digits, '.', '-' and '_' (no port, user or upper case)")
    if not slash:
        if allow_trust_domain:
            return text
        raise ValueError("a workload's SPIFFE ID has a path after the trust domain")
    for seg in path.split("/"):
        if not seg:
            raise ValueError("a SPIFFE ID path has no empty segment and no trailing '/'")
        if seg in (".", ".."):
            raise ValueError("a SPIFFE ID path has no '.' or '..' segment")
        if not _SEGMENT.match(seg):
            raise ValueError("path segments have only letters, digits, '.', '-' and '_' (no query or fragment)")
    return text


def trust_domain_of(spiffe_id: str) -> str:
    return spiffe_id[len("spiffe://") :].partition("/")[0]


def uri_sans(cert: Any) -> list[str]:
    """The URI SANs of a ``cryptography`` certificate (empty without a SAN extension)."""
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(x509.UniformResourceIdentifier))


def spiffe_id_of(cert: Any) -> str:
    """The SPIFFE ID of an X.509-SVID (a ``cryptography`` certificate or DER
    bytes); ``ValueError`` unless it has exactly one URI SAN and that is a
    valid SPIFFE ID."""
    if isinstance(cert, (bytes, bytearray)):
        from cryptography import x509

        cert = x509.load_der_x509_certificate(bytes(cert))
    uris = uri_sans(cert)
    if len(uris) != 1:
        raise ValueError(f"an X.509-SVID has exactly one URI SAN; this certificate has {len(uris)}")
    return parse_spiffe_id(uris[0])


def parse_id_list(value: object, name: str) -> tuple[str, ...]:
    """Comma-separated SPIFFE IDs or trust domains, each checked; the config parser."""
    from ..errors import ConfigError

    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out: list[str] = []
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        try:
            out.append(parse_spiffe_id(item, allow_trust_domain=True))
        except ValueError as exc:
            raise ConfigError(name, item, "SPIFFE IDs (spiffe://example.org/ns/app) or trust domains (spiffe://example.org), comma-separated", detail=str(exc)) from None
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class IdMatcher:
    """Accepts a SPIFFE ID equal to one of ``ids``, or in one of ``trust_domains``."""

    ids: frozenset[str]
    trust_domains: frozenset[str]

    @classmethod
    def of(cls, items: Iterable[str]) -> "IdMatcher":
        ids, tds = set(), set()
        for item in items:
            parse_spiffe_id(item, allow_trust_domain=True)
            if "/" in item[len("spiffe://") :]:
                ids.add(item)
            else:
                tds.add(trust_domain_of(item))
        return cls(frozenset(ids), frozenset(tds))

    def __bool__(self) -> bool:
        return bool(self.ids or self.trust_domains)

    def accepts(self, spiffe_id: str) -> bool:
        return spiffe_id in self.ids or trust_domain_of(spiffe_id) in self.trust_domains

    def describe(self) -> str:
        parts = sorted(self.ids) + [f"any ID in spiffe://{td}" for td in sorted(self.trust_domains)]
        return " or ".join(parts) if parts else "nothing"

    def check_der(self, der: bytes | None, *, side: str = "server") -> str:
        """The peer's SPIFFE ID if its certificate (DER) is acceptable; else
        :class:`PeerIdentityError` naming the expected and presented identity."""
        if not der:
            raise PeerIdentityError(self.describe(), "", side=side)
        try:
            presented = spiffe_id_of(der)
        except ValueError as exc:
            raise PeerIdentityError(self.describe(), f"no valid SPIFFE ID ({exc})", side=side) from None
        if not self.accepts(presented):
            raise PeerIdentityError(self.describe(), presented, side=side)
        return presented

"""A workload identity: certificate chain, private key and trust bundle,
checked once and then immutable.

``Identity`` never shows its key: not in ``repr``, ``summary()`` (what
``stats()`` prints), errors or logs. Its ``generation`` grows with every
rotation; TLS contexts and connection pools are keyed by it, so connections
made under an old certificate drain instead of being reused.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Identity", "IdentityInvalid", "load_identity", "der_to_pem"]

_generations = itertools.count(1)


class IdentityInvalid(ValueError):
    """Material that must not become the identity. ``setting`` names the
    setting (or source) at fault; the message never holds key material."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"{setting}: {reason}")


@dataclass(frozen=True, eq=False)
class Identity:
    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    bundle_pem: bytes = field(repr=False)
    spiffe_id: str
    serial: int
    not_after: float
    sha256: str
    source: str
    generation: int = field(default_factory=lambda: next(_generations))

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """What ``stats()`` shows: SPIFFE ID, serial, expiry. Never the key."""
        now = time.time() if now is None else now
        return {
            "spiffe_id": self.spiffe_id,
            "serial": format(self.serial, "x"),
            "not_after": datetime.datetime.fromtimestamp(self.not_after, datetime.timezone.utc).isoformat(),
            "expires_in_s": round(self.not_after - now, 1),
            "sha256": self.sha256,
            "source": self.source,
            "generation": self.generation,
        }

    def __repr__(self) -> str:
        return f"<Identity {self.spiffe_id or 'no SPIFFE ID'} serial={self.serial:x} generation={self.generation}>"


def der_to_pem(kind: str, der: bytes) -> bytes:
    import base64

    b64 = base64.encodebytes(der).replace(b"\n", b"")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return b"-----BEGIN " + kind.encode() + b"-----\n" + b"\n".join(lines) + b"\n-----END " + kind.encode() + b"-----\n"


def _crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - depends on the install
        raise IdentityInvalid("MESHLIB_TLS_MODE", "TLS identities need the 'cryptography' package: pip install 'meshlib-client[tls]'") from None
    return x509


def load_identity(
    chain_pem: bytes,
    key_pem: bytes,
    bundle_pem: bytes,
    *,
    names: tuple[str, str, str] = ("MESHLIB_TLS_CERT", "MESHLIB_TLS_KEY", "MESHLIB_TLS_CA"),
    source: str = "files",
    now: float | None = None,
) -> Identity:
    """Check PEM material and make it an :class:`Identity`.

    Rejected (``IdentityInvalid`` naming the setting): no certificate, a
    certificate or key that does not parse (a half-written file), a key that
    does not match the first certificate, an expired or not yet valid
    certificate, an empty or unparsable trust bundle."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import serialization

    cert_name, key_name, ca_name = names
    now = time.time() if now is None else now
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise IdentityInvalid(cert_name, "no complete PEM certificate (empty, truncated or not PEM)") from None
    try:
        bundle = x509.load_pem_x509_certificates(bundle_pem)
    except ValueError:
        raise IdentityInvalid(ca_name, "no complete PEM certificate in the trust bundle") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise IdentityInvalid(key_name, "not a complete, unencrypted PEM private key") from None
    except Exception:  # cryptography's UnsupportedAlgorithm and friends
        raise IdentityInvalid(key_name, "a private key of an unsupported kind") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != leaf.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise IdentityInvalid(key_name, f"the key does not match the certificate in {cert_name}")
    start = leaf.not_valid_before_utc.timestamp()
    end = leaf.not_valid_after_utc.timestamp()
    if end <= now:
        raise IdentityInvalid(cert_name, f"the certificate expired at {leaf.not_valid_after_utc.isoformat()}")
    if start > now + 300:  # five minutes of clock skew, as SPIRE allows
        raise IdentityInvalid(cert_name, f"the certificate is not valid before {leaf.not_valid_before_utc.isoformat()}")
    from .spiffe_id import spiffe_id_of, uri_sans

    spiffe_id = ""
    if uri_sans(leaf):
        try:
            spiffe_id = spiffe_id_of(leaf)
        except ValueError as exc:
            if source != "files":
                raise IdentityInvalid(cert_name, f"not an X.509-SVID: {exc}") from None
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    return Identity(
        chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        bundle_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle),
        spiffe_id=spiffe_id,
        serial=leaf.serial_number,
        not_after=end,
        sha256=hashlib.sha256(leaf_der).hexdigest(),
        source=source,
    )

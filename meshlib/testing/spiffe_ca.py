"""A throwaway SPIFFE certificate authority for tests and the demo.

``SpiffeCA("example.org")`` makes a self-signed root for a trust domain and
issues X.509-SVIDs: leaf certificates whose only URI SAN is a SPIFFE ID, as
the X.509-SVID standard requires. Every key is made in memory; nothing is
written unless you call :meth:`Svid.write`.

    ca = SpiffeCA("example.org")
    svid = ca.issue("spiffe://example.org/inventory")
    svid.write(tmp_path / "inv")          # inv.crt, inv.key next to ca.crt
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["SpiffeCA", "Svid"]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass(frozen=True)
class Svid:
    """One issued certificate: PEM chain (leaf first), PEM key, and its trust bundle."""

    spiffe_id: str
    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    bundle_pem: bytes
    serial: int
    leaf_der: bytes
    key_der: bytes = field(repr=False)

    def write(self, stem: Path | str) -> tuple[str, str, str]:
        """Write ``<stem>.crt``, ``<stem>.key`` (mode 0600) and ``<stem>.ca``; return their paths."""
        stem = str(stem)
        paths = (stem + ".crt", stem + ".key", stem + ".ca")
        for path, data in zip(paths, (self.chain_pem, self.key_pem, self.bundle_pem)):
            write_atomically(path, data)
        os.chmod(paths[1], 0o600)
        return paths


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` in one step (write a sibling, then rename over it)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class SpiffeCA:
    """A root CA for one SPIFFE trust domain (ECDSA P-256, in memory)."""

    def __init__(self, trust_domain: str = "example.org") -> None:
        self.trust_domain = trust_domain
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlib test CA"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} root")])
        now = _now()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]), critical=False)
            .sign(self._key, hashes.SHA256())
        )  # fmt: skip

    @property
    def bundle_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def bundle_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def issue(
        self,
        spiffe_id: str | None = None,
        *,
        uris: Sequence[str] | None = None,
        dns: Sequence[str] = (),
        lifetime: float = 3600.0,
        not_before: datetime.datetime | None = None,
        common_name: str | None = None,
    ) -> Svid:
        """An X.509-SVID for ``spiffe_id``. ``uris`` replaces the URI SANs
        (to make non-conforming certificates for tests: none, or two);
        ``lifetime`` may be negative to make an expired certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        uri_sans = list(uris) if uris is not None else [spiffe_id or f"spiffe://{self.trust_domain}/workload"]
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uri_sans]
        sans += [x509.DNSName(d) for d in dns]
        start = not_before or (_now() - datetime.timedelta(minutes=5))
        end = _now() + datetime.timedelta(seconds=lifetime)
        if end <= start:
            start = end - datetime.timedelta(hours=1)
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlib test workload")]
        if common_name:
            subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, True, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )  # fmt: skip
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return Svid(
            spiffe_id=uri_sans[0] if uri_sans else "",
            chain_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key_pem,
            bundle_pem=self.bundle_pem,
            serial=cert.serial_number,
            leaf_der=cert.public_bytes(serialization.Encoding.DER),
            key_der=key_der,
        )

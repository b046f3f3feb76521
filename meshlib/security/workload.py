"""The SPIFFE Workload API as an identity source, through py-spiffe
(``pip install 'meshlib-client[spiffe]'``).

py-spiffe's ``X509Source`` keeps a ``FetchX509SVID`` stream open to the agent
(``SPIFFE_ENDPOINT_SOCKET`` / ``MESHLIB_SPIFFE_ENDPOINT_SOCKET``) and reconnects
with back-off; every X.509-SVID and bundle update it receives is checked like
a file identity and then used for new connections. If py-spiffe gives up on
the stream (it closes its source on a non-retryable error or a bad update),
meshlib keeps the last good identity and opens a new source with back-off.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

from .._background import PeriodicWorker
from ..errors import ConfigError
from .identity import IdentityInvalid, load_identity
from .sources import IdentitySource

__all__ = ["SpiffeIdentitySource", "socket_address"]

log = logging.getLogger("meshlib")
SETTING = "MESHLIB_SPIFFE_ENDPOINT_SOCKET"


def socket_address(value: str) -> str:
    """``unix:///path`` (as the SPIFFE standard writes it) from a bare path too."""
    value = value.strip()
    if value.startswith("/"):
        return "unix://" + value
    return value


def _pem_material(x509_context: Any) -> tuple[bytes, bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    pem = serialization.Encoding.PEM
    svid = x509_context.default_svid
    chain = b"".join(c.public_bytes(pem) for c in svid.cert_chain)
    key = svid.private_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    bundles = sorted(x509_context.x509_bundle_set.bundles, key=lambda b: str(b.trust_domain))
    authorities = [a.public_bytes(pem) for b in bundles for a in b.x509_authorities]
    return chain, key, b"".join(sorted(authorities))


class SpiffeIdentitySource(IdentitySource):
    kind = "spiffe"
    NAMES = (SETTING, SETTING, SETTING)

    def __init__(self, socket: str, *, timeout: float = 5.0, retry_interval: float = 1.0, now: Callable[[], float] = time.time) -> None:
        try:
            import spiffe  # noqa: F401
        except ImportError:
            raise ConfigError(SETTING, socket, "a Workload API socket, with py-spiffe installed: pip install 'meshlib-client[spiffe]'") from None
        self.socket = socket_address(socket)
        self._timeout = timeout
        self._closed = False
        self._x509: Any = None
        self._rng = random.Random()
        self._failures = 0
        self._next_try = 0.0
        source = self._open(setting_error=True)
        try:
            identity = self._identity_of(source)
        except IdentityInvalid as exc:
            source.close()
            raise ConfigError(SETTING, socket, "a Workload API that serves a valid X.509-SVID", detail=exc.reason) from None
        super().__init__(identity, now=now)
        self._x509 = source
        source.subscribe_for_updates(self._updated)
        self._worker = PeriodicWorker("spiffe-workload", retry_interval, self._watch)
        self._worker.start()

    def _open(self, *, setting_error: bool = False) -> Any:
        from spiffe import X509Source

        try:
            return X509Source(socket_path=self.socket, timeout_in_seconds=self._timeout)
        except Exception as exc:  # py-spiffe raises ArgumentError, X509SourceError, ...
            if setting_error:
                raise ConfigError(SETTING, self.socket, "a reachable SPIFFE Workload API socket (unix:///path)", detail=type(exc).__name__ + ": " + str(exc)[:200]) from None
            raise

    def _identity_of(self, source: Any) -> Any:
        return load_identity(*_pem_material(source.get_x509_context()), names=self.NAMES, source="spiffe", now=time.time())

    def _updated(self) -> None:
        source = self._x509
        if source is None or self._closed:
            return
        try:
            identity = self._identity_of(source)
        except IdentityInvalid as exc:
            self._failed(f"Workload API update rejected: {exc.reason}")
            return
        except Exception as exc:
            self._failed(f"Workload API update unreadable: {type(exc).__name__}")
            return
        if identity.sha256 != self._identity.sha256 or identity.bundle_pem != self._identity.bundle_pem:
            self._rotate(identity)

    def _watch(self) -> None:
        """Reopen the source, with jittered back-off, once py-spiffe closed it."""
        source = self._x509
        if self._closed or (source is not None and not source.is_closed()):
            return
        now = time.monotonic()
        if now < self._next_try:
            return
        if source is not None:
            self._failed("Workload API stream lost; keeping the last identity and reconnecting")
            self._x509 = None
        try:
            fresh = self._open()
        except Exception as exc:
            self._failures += 1
            self._next_try = now + self._rng.uniform(0, min(30.0, 0.5 * 2**self._failures))
            self._failed(f"Workload API unreachable ({type(exc).__name__})")
            return
        self._failures = 0
        self._x509 = fresh
        fresh.subscribe_for_updates(self._updated)
        self._updated()

    def status(self) -> dict[str, Any]:
        return {**super().status(), "socket": self.socket}

    def close(self) -> None:
        self._closed = True
        self._worker.stop()
        source, self._x509 = self._x509, None
        if source is not None:
            try:
                source.close()
            except Exception:
                log.debug("meshlib: closing the Workload API source failed", exc_info=True)

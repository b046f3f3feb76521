"""gRPC over the mesh's TLS: channel credentials per identity generation, the
SPIFFE ID check grpcio cannot do itself, and rotating server credentials.

grpcio (Python) verifies the server's chain against the root certificates it
is given, but then always checks a *host name* (the target, or
``grpc.ssl_target_name_override``) against the certificate's DNS/IP SANs, or
its CN when it has neither; it never looks at URI SANs and has no hook to
replace the check. So for a service with ``TLS_SPIFFE_IDS`` meshlib verifies
the server itself, failing closed, before a channel to an endpoint is used:

1. a TLS handshake from Python to the endpoint with the same identity and
   trust bundle, checking the chain and the SPIFFE ID (exactly one URI SAN,
   one of the accepted IDs); on a mismatch the attempt fails with
   ``PeerIdentityError`` and no channel is made, no RPC sent;
2. the name grpcio is told to check (``ssl_target_name_override``) is taken
   from that verified certificate (its first DNS SAN, else its CN), and the
   channel trusts only the same bundle. A certificate with no DNS SAN and no
   CN cannot be used by grpcio at all: the attempt fails, saying so.

The check is repeated for every new per-endpoint channel, and channels are
keyed by identity generation, so a rotation re-verifies every endpoint.
"""

from __future__ import annotations

import socket
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable

import grpc

from .identity import Identity
from .spiffe_id import PeerIdentityError

if TYPE_CHECKING:  # pragma: no cover
    from .client import ClientTls
    from .sources import IdentitySource

__all__ = ["GrpcTls", "RotatingChannelCredentials", "server_credentials", "grpc_name_of"]


def grpc_name_of(der: bytes) -> str:
    """The host name grpcio will accept for this certificate ("" if none)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        if dns:
            return str(dns[0]).replace("*.", "meshlib-any.", 1)
        if san.get_values_for_type(x509.IPAddress):
            return ""
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


class GrpcTls:
    """One service's gRPC credentials and per-endpoint verification."""

    def __init__(self, tls: "ClientTls") -> None:
        self.tls = tls
        self._lock = threading.Lock()
        self._creds: tuple[int, Any] | None = None

    @property
    def generation(self) -> int:
        return self.tls.generation

    def credentials(self) -> Any:
        import grpc

        ident = self.tls.identity()
        gen = ident.generation if ident is not None else 0
        built = self._creds
        if built is None or built[0] != gen:
            with self._lock:
                built = self._creds
                if built is None or built[0] != gen:
                    built = self._creds = (gen, _channel_credentials(grpc, ident, self.tls.present))
        return built[1]

    def rotating(self) -> "RotatingChannelCredentials":
        """Credentials for channels of the caller's own (``mesh.grpc_credentials``)."""
        return RotatingChannelCredentials(self)

    def target_name(self, address: str, timeout: float) -> str:
        """The name grpcio must check for ``address``: the service name, or for
        a service with TLS_SPIFFE_IDS the name in the certificate the endpoint
        presented to meshlib's own verifying handshake (see the module doc)."""
        if not self.tls.matcher:
            return self.tls.service
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        ctx = self.tls.ssl_context()
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=self.tls.service) as tls_sock:  # checks the SPIFFE ID
                der = tls_sock.getpeercert(True)
        name = grpc_name_of(der or b"")
        if not name:
            raise PeerIdentityError(
                self.tls.matcher.describe() + " with a DNS SAN or CN grpcio can check",
                "a certificate with only its SPIFFE ID (grpcio cannot skip its host-name check; give the SVID a DNS name)",
            )
        return name


    def factory(self, options: tuple[tuple[str, Any], ...], compression: Any, *, aio: bool = False, timeout: float = 5.0) -> Any:
        """``make(endpoint)`` for a per-endpoint channel pool: a secure channel
        with the current credentials, after the SPIFFE ID check when the
        service has TLS_SPIFFE_IDS (a mismatch raises PeerIdentityError and
        makes no channel)."""
        import grpc
        import grpc.aio

        base = tuple(o for o in options if o[0] != "grpc.ssl_target_name_override")
        secure = grpc.aio.secure_channel if aio else grpc.secure_channel

        def make(endpoint: Any) -> Any:
            name = self.target_name(endpoint.address, timeout)
            opts = (*base, ("grpc.ssl_target_name_override", name))
            return secure(endpoint.address, self.credentials(), options=opts, compression=compression)

        return make

    def follow(self, pool: Any) -> Any:
        """Retire every channel of ``pool`` (``pool.retire_all()``) after each
        identity rotation: calls in flight finish on the old connection, new
        calls get channels made with the new certificate. Returns ``pool``."""
        source = self.tls._provider.source
        if source is not None:
            ref = weakref.ref(pool)

            def retire(_identity: Identity) -> None:
                alive = ref()
                if alive is None:  # the pool is gone (its channel was closed): stop following
                    source.unsubscribe(retire)
                else:
                    alive.retire_all()

            source.subscribe(retire)
        return pool


class RotatingChannelCredentials(grpc.ChannelCredentials):
    """``grpc.ChannelCredentials`` whose certificate and trust bundle are the
    identity current when a channel is *made* from them.

    grpcio reads a credentials object's C-core credentials once, when
    ``grpc.secure_channel`` / ``grpc.aio.secure_channel`` builds the channel
    (``credentials._credentials``), and the channel keeps them for every
    connection it ever opens: a client channel's certificate cannot change
    (grpcio's dynamic certificates, ``dynamic_ssl_server_credentials``, are
    for servers only). So this object answers that read with the current
    generation's credentials: every channel made after a rotation presents
    the new certificate, and a channel made before keeps the old one until
    it is closed. Re-make your channel on :meth:`on_rotation` (or use
    ``mesh.grpc_channel``, whose per-endpoint channels are re-made for you).
    ``grpc.composite_channel_credentials`` reads it once too: compose again
    after a rotation."""

    def __init__(self, owner: GrpcTls) -> None:  # no super().__init__: ``_credentials`` is computed
        self._owner = owner

    @property
    def _credentials(self) -> Any:  # what grpc.secure_channel reads
        return self._owner.credentials()._credentials

    @property
    def generation(self) -> int:
        """The identity generation a channel made now would use (it grows by one per rotation)."""
        return self._owner.generation

    def on_rotation(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(generation)`` after each rotation (on the identity
        source's thread; make the new channel there, close the old one when
        its calls are done). Returns a function that stops the calls."""
        source = self._owner.tls._provider.source
        if source is None:  # a trust bundle only: nothing rotates
            return lambda: None

        def listener(identity: Identity) -> None:
            callback(identity.generation)

        source.subscribe(listener)
        return lambda: source.unsubscribe(listener)

    def __repr__(self) -> str:
        return f"<RotatingChannelCredentials {self._owner.tls.service} generation {self.generation}>"


def _channel_credentials(grpc: Any, identity: Identity | None, present: bool) -> Any:
    if identity is None:
        return grpc.ssl_channel_credentials()
    if present:
        return grpc.ssl_channel_credentials(identity.bundle_pem, identity.key_pem, identity.chain_pem)
    return grpc.ssl_channel_credentials(identity.bundle_pem)


def server_credentials(source: "IdentitySource", *, require_client_auth: bool = True) -> Any:
    """``grpc.ServerCredentials`` that follow the source: grpcio asks for the
    configuration on each new handshake, and gets a new one after a rotation."""
    import grpc

    def config(identity: Identity) -> Any:
        return grpc.ssl_server_certificate_configuration([(identity.key_pem, identity.chain_pem)], root_certificates=identity.bundle_pem)

    served = [source.current().generation]
    lock = threading.Lock()

    def fetch() -> Any:
        identity = source.current()
        with lock:
            if identity.generation == served[0]:
                return None
            served[0] = identity.generation
        return config(identity)

    return grpc.dynamic_ssl_server_credentials(config(source.current()), fetch, require_client_authentication=require_client_auth)

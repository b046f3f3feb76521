"""The few etcd v3 calls meshlib makes, over the ``etcd3`` client (PyPI ``cslab-etcd3``).

Ranges, puts, deletes, leases and compaction go through ``etcd3``'s client,
which brings authentication (user/password token), TLS and the generated
protobuf stubs. Three things are done differently, and why:

- The endpoint is built with ``time_retry=0``. The client otherwise marks its
  only endpoint failed for 300 s after one UNAVAILABLE, so a short etcd
  restart would make every call fail for five minutes.
- Without TLS the auth token is sent only as call metadata: ``etcd3`` also
  attaches it as call credentials, which gRPC refuses on a plaintext channel
  ("Established channel does not have a sufficient security level").
- The watch uses the generated ``Watch`` stub directly. ``etcd3``'s watcher runs
  callbacks on a thread of its own that ``close()`` cannot stop promptly, and
  turns a compacted revision into an exception after cancelling the watch;
  meshlib needs a stream it can cancel and the response's ``compact_revision``
  and ``header.revision`` to re-list and re-watch (etcd's documented recovery).

Every failure surfaces as :class:`RegistryUnavailable` with etcd's own words
(never the password).
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import etcd3
import etcd3.etcdrpc as rpc
import grpc
from etcd3 import utils as etcd_utils

from .registry import RegistryUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RegistryConfig

T = TypeVar("T")

#: gRPC keepalive: notice a dead etcd (no RST, e.g. a cut network) within ~15 s.
#: etcd refuses pings closer than its --grpc-keepalive-min-time (5 s).
_CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code = exc.code()
        return f"{code.name if code else 'error'}: {exc.details() or ''}".rstrip(": ")
    return str(exc) or type(exc).__name__


def _mapped(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(self: "EtcdClient", *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except (grpc.RpcError, etcd3.Etcd3Exception, ValueError) as exc:
            raise RegistryUnavailable(f"etcd {self.target}: {_describe(exc)}") from None

    return wrapper


class WatchStream:
    """One Watch stream over a key range; iterate for ``WatchResponse``s,
    ``cancel()`` from any thread to end it."""

    def __init__(self, client: "EtcdClient", key: bytes, range_end: bytes, start_revision: int) -> None:
        self._done = threading.Event()
        create = rpc.WatchCreateRequest(key=key, range_end=range_end, start_revision=start_revision, progress_notify=True)
        first = rpc.WatchRequest(create_request=create)

        def requests() -> Iterator[Any]:
            yield first
            self._done.wait()  # keep the request side open until cancelled

        raw = client._raw
        self._call = rpc.WatchStub(raw.channel).Watch(requests(), credentials=raw.call_credentials, metadata=raw.metadata)
        self.target = client.target
        self._responses = self._iterate()

    def __next__(self) -> Any:
        return next(self._responses)

    def __iter__(self) -> Iterator[Any]:
        return self

    def _iterate(self) -> Iterator[Any]:
        try:
            yield from self._call
        except grpc.RpcError as exc:
            if self._done.is_set():
                return
            raise RegistryUnavailable(f"etcd {self.target}: watch: {_describe(exc)}") from None
        if not self._done.is_set():
            raise RegistryUnavailable(f"etcd {self.target}: watch stream closed by the server")

    def cancel(self) -> None:
        self._done.set()
        self._call.cancel()


class EtcdClient:
    """A connection to one etcd member. Build a new one to reconnect (which
    also authenticates again: tokens do not survive an etcd restart)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        user: str = "",
        password: str = "",
        ca: str = "",
        cert: str = "",
        key: str = "",
    ) -> None:
        self.target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            creds = etcd3.Etcd3Client.get_secure_creds(ca, key or None, cert or None) if ca else None
            endpoint = etcd3.Endpoint(host, port, secure=bool(ca), creds=creds, time_retry=0, opts=_CHANNEL_OPTIONS)
            self._raw = etcd3.MultiEndpointEtcd3Client(endpoints=[endpoint], timeout=timeout, user=user or None, password=password or None)
            if not ca:
                # gRPC refuses call credentials on a plaintext channel; the
                # token also travels as metadata, which is what etcd reads.
                self._raw.call_credentials = None
        except (grpc.RpcError, etcd3.Etcd3Exception, OSError) as exc:
            raise RegistryUnavailable(f"etcd {self.target}: {_describe(exc)}") from None

    @classmethod
    def from_config(cls, host: str, port: int, cfg: "RegistryConfig") -> "EtcdClient":
        return cls(
            host,
            port,
            timeout=cfg.registry_timeout,
            user=cfg.etcd_user,
            password=cfg.etcd_password,
            ca=cfg.etcd_tls_ca,
            cert=cfg.etcd_tls_cert,
            key=cfg.etcd_tls_key,
        )

    @_mapped
    def range_prefix(self, prefix: str) -> tuple[int, list[tuple[str, bytes, int]]]:
        """Every key under ``prefix`` (a directory: ``prefix/``) as (key, value,
        mod_revision), and the store revision."""
        resp = self._raw.get_prefix_response(prefix)
        return resp.header.revision, [(kv.key.decode("utf-8", "replace"), kv.value, kv.mod_revision) for kv in resp.kvs]

    def watch(self, prefix: str, start_revision: int) -> WatchStream:
        key = etcd_utils.to_bytes(prefix)
        try:
            return WatchStream(self, key, etcd_utils.prefix_range_end(key), start_revision)
        except (grpc.RpcError, ValueError) as exc:
            raise RegistryUnavailable(f"etcd {self.target}: watch: {_describe(exc)}") from None

    @_mapped
    def put(self, key: str, value: str, lease: int = 0) -> int:
        """Write ``key``; return the revision of the write."""
        return self._raw.put(key, value, lease=lease or None).header.revision

    @_mapped
    def delete(self, key: str) -> None:
        self._raw.delete(key)

    @_mapped
    def grant(self, ttl: int) -> int:
        return int(self._raw.lease(ttl).id)

    @_mapped
    def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; return its remaining TTL (0: it expired or was revoked)."""
        responses = list(self._raw.refresh_lease(lease_id))
        return int(responses[-1].TTL) if responses else 0

    @_mapped
    def revoke(self, lease_id: int) -> None:
        self._raw.revoke_lease(lease_id)

    @_mapped
    def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (tests and benchmarks use it)."""
        self._raw.compact(revision, physical=True)

    def close(self) -> None:
        self._raw.close()

"""The ``grpc.health.v1.Health/Check`` probe (gRPC's health-checking
protocol, as Envoy's gRPC health checker), registered as the ``grpc`` probe.

Its two messages are encoded by hand (a few bytes of protobuf wire format),
so the probe needs grpcio only, imported when a probe runs: importing this
module costs nothing without the ``grpc`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..endpoint import Endpoint

if TYPE_CHECKING:
    import grpc

    from .checker import HealthCheckConfig

__all__ = ["GrpcHealthProbe", "grpc_health_probe", "encode_health_request", "decode_health_status", "HEALTH_CHECK_METHOD"]

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    """The varint at ``data[i:]`` and the index after it."""
    value = shift = 0
    while i < len(data):
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return value, i


def encode_health_request(service: str) -> bytes:
    """``grpc.health.v1.HealthCheckRequest{service}`` in protobuf wire format
    (field 1, length-delimited); empty for the whole server."""
    data = service.encode()
    return b"\x0a" + _varint(len(data)) + data if data else b""


def decode_health_status(data: bytes) -> int:
    """The ``status`` (field 1, varint) of a ``HealthCheckResponse``; 0 (UNKNOWN) if absent."""
    i, status = 0, 0
    while i < len(data):
        tag, i = _read_varint(data, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            if field == 1:
                status = value
        elif wire == 2:
            length, i = _read_varint(data, i)
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            break
    return status


class GrpcHealthProbe:
    """The ``grpc.health.v1.Health/Check`` probe (gRPC's health-checking
    protocol, as Envoy's gRPC health checker): passes when the endpoint
    answers SERVING for ``health_check_path`` (the service name asked about;
    empty means the whole server) within ``health_check_timeout``. A fresh
    channel per probe, so a probe never rides on a broken connection.

    The default probe is plaintext; for TLS endpoints pass
    ``Mesh(health_probe=GrpcHealthProbe(credentials=...))``."""

    def __init__(self, credentials: "grpc.ChannelCredentials | None" = None, options: Sequence[tuple[str, Any]] = ()) -> None:
        self.credentials = credentials
        self.options = tuple(options)

    def __call__(self, endpoint: Endpoint, cfg: "HealthCheckConfig") -> bool:
        try:
            import grpc
        except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
            raise ModuleNotFoundError("health_check_protocol=grpc needs grpcio: pip install 'meshlib-client[grpc]'") from exc
        if self.credentials is not None:
            ch = grpc.secure_channel(endpoint.address, self.credentials, options=self.options)
        else:
            ch = grpc.insecure_channel(endpoint.address, options=self.options)
        try:
            check = ch.unary_unary(HEALTH_CHECK_METHOD)
            answer = check(encode_health_request(cfg.path), timeout=cfg.timeout, wait_for_ready=True)
            return decode_health_status(answer) == SERVING
        except grpc.RpcError:
            return False
        finally:
            ch.close()


#: The probe a service with ``health_check_protocol=grpc`` uses by default.
grpc_health_probe = GrpcHealthProbe()

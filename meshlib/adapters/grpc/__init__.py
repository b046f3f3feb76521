"""gRPC adapter (optional extra ``meshlib-client[grpc]``): balanced channels and
interceptors, sync and ``grpc.aio``, with gRPC statuses as outcomes.

grpcio's Python API has no pluggable resolver or balancer, so meshlib balances
per call itself: :class:`MeshChannel` is a real ``grpc.Channel`` (generated
stubs work on it unchanged) holding one ordinary channel per endpoint, made on
first use and closed when the endpoint leaves the service's snapshot (after
the calls on it finish) or when the Mesh closes. Every call goes through the
same attempt loop as the HTTP adapters (``meshlib.core.driver``).

One module per concern, imports pointing one way (top to bottom):

- :mod:`.status`: how a status counts (``GRPC_TO_HTTP``, :func:`judge_rpc`)
- :mod:`.errors`: meshlib's errors as ``grpc.RpcError`` / ``grpc.aio.AioRpcError``
- :mod:`.future`: a cancellable ``.future()``; :mod:`.replay`: request streams
  replayed to retried attempts; :mod:`.pool`: per-endpoint channels
- :mod:`.pinned`, :mod:`.stream`: response streams pinned to one endpoint
- :mod:`.channel`, :mod:`.interceptors`, :mod:`.own_channel`: the sync API
- :mod:`.aio_calls`, :mod:`.aio_stream`, :mod:`.aio_channel`,
  :mod:`.aio_interceptors`: the ``grpc.aio`` API

The ``grpc.health.v1`` probe lives in :mod:`meshlib.health.grpc_probe`
(re-exported here).
"""

from __future__ import annotations

try:
    import grpc  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError("mesh.grpc_channel() needs grpcio: pip install 'meshlib-client[grpc]'") from exc

from ...health.grpc_probe import GrpcHealthProbe, decode_health_status, encode_health_request, grpc_health_probe
from .aio_channel import MeshAioChannel, aio_channel
from .aio_interceptors import MeshAioClientInterceptor, aio_interceptors
from .channel import MeshChannel, channel
from .errors import RpcStatusError, aio_rpc_error, rpc_error
from .future import FutureCall
from .interceptors import MeshClientInterceptor, interceptors
from .replay import Replay
from .status import GRPC_TO_HTTP, judge_rpc
from .stream import ResponseStream

__all__ = [
    "MeshChannel",
    "MeshClientInterceptor",
    "MeshAioChannel",
    "MeshAioClientInterceptor",
    "RpcStatusError",
    "FutureCall",
    "ResponseStream",
    "Replay",
    "GRPC_TO_HTTP",
    "judge_rpc",
    "rpc_error",
    "aio_rpc_error",
    "grpc_health_probe",
    "GrpcHealthProbe",
    "encode_health_request",
    "decode_health_status",
    "channel",
    "interceptors",
    "aio_channel",
    "aio_interceptors",
]

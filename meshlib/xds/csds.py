"""CSDS: ``envoy.service.status.v3.ClientStatusDiscoveryService`` over gRPC.

What ``mesh.xds_status()`` says, in the shape grpcdebug-style tools read
(``grpcdebug <address> xds status``): one ``ClientConfig`` for this client
(its bootstrap node) with a ``GenericXdsConfig`` per resource — type URL,
name, version, ``client_status`` (REQUESTED, DOES_NOT_EXIST, ACKED, NACKED,
TIMEOUT), last update time and, for a NACKed resource, an ``error_state``
with the reason. ``xds_config`` (the resource itself) is left empty: meshlib
keeps its own translation of a resource, not the protobuf (gRFC A40 allows
leaving it out).

Off unless ``MESHLIB_XDS_CSDS`` names an address; a loopback one unless
``MESHLIB_ADMIN_ALLOW_REMOTE`` is on (CSDS has no authentication, as the admin
endpoint). ``FetchClientStatus`` and ``StreamClientStatus`` are served.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any, Callable, Iterable, Iterator, Mapping

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from .resources import SHORT

__all__ = ["CsdsServer", "client_status"]

log = logging.getLogger("meshlib.xds")

_TYPE_URL = {short: url for url, short in SHORT.items()}
_STATUS = {
    "requested": dump.REQUESTED,
    "does-not-exist": dump.DOES_NOT_EXIST,
    "acked": dump.ACKED,
    "nacked": dump.NACKED,
    "nacked-but-cached": dump.NACKED,  # the cached version stays in version_info
    "timeout": dump.TIMEOUT,
}


def client_status(status: Mapping[str, Any], node: base_pb2.Node | None = None) -> csds_pb2.ClientStatusResponse:
    """``mesh.xds_status()`` as a ClientStatusResponse (no ClientConfig when xDS is off)."""
    resp = csds_pb2.ClientStatusResponse()
    if not status.get("enabled", True):
        return resp
    config = resp.config.add()
    if node is not None:
        config.node.CopyFrom(node)
    else:
        config.node.id = str(status.get("node", ""))
    for r in status.get("resources", ()):
        g = config.generic_xds_configs.add(type_url=_TYPE_URL.get(r["type"], r["type"]), name=r["name"], version_info=r["version"])
        g.client_status = _STATUS.get(r["status"], dump.UNKNOWN)
        if r.get("last_updated"):
            g.last_updated.FromNanoseconds(int(r["last_updated"] * 1e9))
        if r.get("error"):
            g.error_state.details = r["error"]
            g.error_state.last_update_attempt.CopyFrom(g.last_updated)
        elif r.get("deleted_by_server"):
            g.error_state.details = "deleted by the server; the cached copy is kept (fail_on_data_errors is off)"
    return resp


class _Service(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):
    def __init__(self, status: Callable[[], Mapping[str, Any]], node: Callable[[], "base_pb2.Node | None"]) -> None:
        self._status = status
        self._node = node

    def _answer(self) -> csds_pb2.ClientStatusResponse:
        return client_status(self._status(), self._node())

    def FetchClientStatus(self, request: csds_pb2.ClientStatusRequest, context: grpc.ServicerContext) -> csds_pb2.ClientStatusResponse:
        return self._answer()

    def StreamClientStatus(self, request_iterator: Iterable[csds_pb2.ClientStatusRequest], context: grpc.ServicerContext) -> Iterator[csds_pb2.ClientStatusResponse]:
        for _ in request_iterator:
            yield self._answer()


class CsdsServer:
    """A gRPC server on ``address`` (``host:port``; port 0 picks a free one)
    serving CSDS from ``status()`` (``mesh.xds_status``); ``close()`` stops it."""

    def __init__(self, address: str, status: Callable[[], Mapping[str, Any]], node: Callable[[], "base_pb2.Node | None"] = lambda: None) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(2, thread_name_prefix="meshlib-csds"))
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(_Service(status, node), self._server)
        host = address.rpartition(":")[0]
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:  # grpcio >= 1.58 raises where older ones returned 0
            self.port = 0
        if not self.port:
            raise OSError(f"meshlib: xds: CSDS could not bind {address}")
        self.address = f"{host}:{self.port}"

    def start(self) -> "CsdsServer":
        self._server.start()
        log.info("meshlib: xds: CSDS on %s", self.address)
        return self

    def close(self) -> None:
        self._server.stop(0.5).wait(5.0)

    def __repr__(self) -> str:
        return f"<CsdsServer {self.address}>"

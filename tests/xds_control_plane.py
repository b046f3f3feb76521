"""A small ADS control plane for the tests (grpcio + xds-protos), state of the world.

Snapshots are Python data: ``{type_url: {name: resource}}`` where a resource is
a protobuf message (packed into an Any), a ready ``Any`` (to send garbage or a
wrong type on purpose), or a callable ``(node_id) -> message | None`` for
client-specific variants (Envoy needs listeners with an address, proxyless
clients an ``api_listener``). :meth:`ControlPlane.set` replaces the snapshot
and pushes it to every stream; :meth:`stop` and :meth:`start` restart the
server on the same port. Every request is recorded, NACKs included.

Also builders for the usual resources (``listener``, ``route_config``,
``cluster``, ``endpoints``) so tests read like a snapshot.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, message

from meshlib.xds.resources import CDS, EDS, LDS, RDS

TYPES = (LDS, RDS, CDS, EDS)
WILDCARD_TYPES = (LDS, CDS)


@dataclass
class Request:
    node: str
    type_url: str
    version: str
    nonce: str
    names: tuple[str, ...]
    error: str
    #: time.monotonic() when it arrived (comparable across processes on Linux).
    at: float = 0.0


def pack(msg: message.Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


class _Stream:
    def __init__(self) -> None:
        self.node = ""
        self.events: queue.Queue[Any] = queue.Queue()
        self.names: dict[str, set[str] | None] = {}  # None: wildcard
        self.last_nonce: dict[str, str] = {}
        self.sent_version: dict[str, str] = {}


class ControlPlane(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self.snapshot: dict[str, dict[str, Any]] = {t: {} for t in TYPES}
        self.version = 0
        self.requests: list[Request] = []
        self._streams: list[_Stream] = []
        self._nonce = itertools.count(1)
        self._packed: dict[int, any_pb2.Any] = {}
        self._readers: list[threading.Thread] = []
        self._server: grpc.Server | None = None
        self.port = port
        self.start()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(32, thread_name_prefix="xds-cp"))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server

    def stop(self) -> None:
        server, self._server = self._server, None
        with self._lock:
            streams, self._streams = self._streams, []
        for s in streams:
            s.events.put(None)
        if server is not None:
            server.stop(0).wait(5)
        with self._lock:
            readers, self._readers = self._readers, []
        for r in readers:
            r.join(5)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- snapshots ---------------------------------------------------------------------

    def set(self, snapshot: Mapping[str, Mapping[str, Any]]) -> str:
        """Replace the whole snapshot (types left out become empty) and push it."""
        with self._lock:
            self.snapshot = {t: dict(snapshot.get(t, {})) for t in TYPES}
            self.version += 1
            self._packed: dict[int, any_pb2.Any] = {}  # each message serialised once per version
            streams = list(self._streams)
        for s in streams:
            s.events.put(("push",))
        return str(self.version)

    def update(self, type_url: str, name: str, resource: Any | None) -> str:
        """Change one resource (None deletes it) and push."""
        snap = {t: dict(v) for t, v in self.snapshot.items()}
        if resource is None:
            snap[type_url].pop(name, None)
        else:
            snap[type_url][name] = resource
        return self.set(snap)

    def nacks(self, node: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.error and (node is None or r.node == node)]

    def acked(self, node: str, type_url: str) -> str | None:
        """The last version ``node`` ACKed for ``type_url``."""
        with self._lock:
            for r in reversed(self.requests):
                if r.node == node and r.type_url == type_url and r.nonce and not r.error:
                    return r.version
        return None

    # -- the service -------------------------------------------------------------------

    def StreamAggregatedResources(self, request_iterator: Iterable[Any], context: grpc.ServicerContext) -> Any:
        stream = _Stream()
        with self._lock:
            self._streams.append(stream)

        def read() -> None:
            try:
                for req in request_iterator:
                    stream.events.put(("req", req))
            except Exception:
                pass
            stream.events.put(None)

        reader = threading.Thread(target=read, daemon=True, name="xds-cp-reader")
        with self._lock:
            self._readers.append(reader)
        reader.start()
        context.add_callback(lambda: stream.events.put(None))
        try:
            while True:
                event = stream.events.get()
                if event is None:
                    return
                if event[0] == "push":
                    for t in TYPES:
                        if t in stream.names:
                            yield from self._respond(stream, t)
                    continue
                req = event[1]
                if req.node.id:
                    stream.node = req.node.id
                with self._lock:
                    self.requests.append(
                        Request(stream.node, req.type_url, req.version_info, req.response_nonce, tuple(req.resource_names), req.error_detail.message,
                                time.monotonic())
                    )
                t = req.type_url
                if t not in TYPES:
                    continue
                if req.response_nonce and req.response_nonce != stream.last_nonce.get(t):
                    continue  # stale nonce: ignored
                names: set[str] | None = set(req.resource_names)
                if t in WILDCARD_TYPES and (not names or "*" in names) and (t not in stream.names or stream.names[t] is None):
                    names = None if not names or names == {"*"} else names
                changed = t not in stream.names or stream.names[t] != names
                stream.names[t] = names
                if changed or not req.response_nonce:
                    yield from self._respond(stream, t)
        finally:
            with self._lock:
                if stream in self._streams:
                    self._streams.remove(stream)

    def _respond(self, stream: _Stream, t: str) -> Any:
        with self._lock:
            resources = self.snapshot[t]
            version = str(self.version)
            cache = self._packed  # this version's: the snapshot keeps its messages (and ids) alive
        wanted = stream.names.get(t)
        out = []
        for name, res in resources.items():
            if wanted is not None and name not in wanted and not isinstance(res, any_pb2.Any):
                continue  # a raw Any (junk sent on purpose) goes to everyone
            if isinstance(res, any_pb2.Any):
                out.append(res)
            elif callable(res):
                variant = res(stream.node)
                if variant is not None:
                    out.append(pack(variant))
            else:
                packed = cache.get(id(res))
                if packed is None:
                    packed = cache[id(res)] = pack(res)  # each message serialised once per version
                out.append(packed)
        if t not in WILDCARD_TYPES and not out and wanted is not None and not wanted:
            return
        nonce = str(next(self._nonce))
        stream.last_nonce[t] = nonce
        stream.sent_version[t] = version
        yield discovery_pb2.DiscoveryResponse(version_info=version, resources=out, type_url=t, nonce=nonce)


# -- resource builders ----------------------------------------------------------------

ADS = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3)


def hcm(route_name: str | None = None, inline: route_pb2.RouteConfiguration | None = None, filters: Sequence[Any] = ()) -> hcm_pb2.HttpConnectionManager:
    h = hcm_pb2.HttpConnectionManager(stat_prefix="out", codec_type=hcm_pb2.HttpConnectionManager.AUTO)
    if inline is not None:
        h.route_config.CopyFrom(inline)
    else:
        h.rds.config_source.CopyFrom(ADS)
        h.rds.route_config_name = route_name or ""
    for f in filters:
        h.http_filters.append(f)
    h.http_filters.append(hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())))
    return h


def api_listener(name: str, route_name: str | None = None, **kw: Any) -> listener_pb2.Listener:
    """A listener as proxyless gRPC (and meshlib) want it."""
    return listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm(route_name, **kw))))


def socket_listener(name: str, port: int, route_name: str | None = None, **kw: Any) -> listener_pb2.Listener:
    """The same listener for an Envoy sidecar: bound to 127.0.0.1:port."""
    lst = listener_pb2.Listener(name=name)
    lst.address.socket_address.address = "127.0.0.1"
    lst.address.socket_address.port_value = port
    lst.filter_chains.append(
        listener_components_pb2.FilterChain(
            filters=[listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm(route_name, **kw)))]
        )
    )
    return lst


def listener(name: str, route_name: str | None = None, envoy_ports: Mapping[str, int] | None = None, **kw: Any) -> Callable[[str], Any]:
    """Per node: an Envoy (node id starting with ``envoy``) gets the socket
    listener on ``envoy_ports[name]``, everyone else the api listener."""
    api = api_listener(name, route_name, **kw)

    def for_node(node: str) -> Any:
        if node.startswith("envoy"):
            return socket_listener(name, envoy_ports[name], route_name, **kw) if envoy_ports and name in envoy_ports else None
        return api

    return for_node


def route(prefix: str = "/", cluster: str = "", weighted: Sequence[tuple[str, int]] = (), headers: Sequence[route_components_pb2.HeaderMatcher] = (),
          path: str | None = None, regex: str | None = None) -> route_components_pb2.Route:  # fmt: skip
    r = route_components_pb2.Route()
    if path is not None:
        r.match.path = path
    elif regex is not None:
        r.match.safe_regex.regex = regex
    else:
        r.match.prefix = prefix
    r.match.headers.extend(headers)
    if weighted:
        for name, w in weighted:
            c = r.route.weighted_clusters.clusters.add()
            c.name = name
            c.weight.value = w
    else:
        r.route.cluster = cluster
    return r


def route_config(name: str, domains: Sequence[str], routes: Sequence[route_components_pb2.Route]) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[route_components_pb2.VirtualHost(name=name, domains=list(domains), routes=list(routes))])


_H2 = http_protocol_options_pb2.HttpProtocolOptions()
_H2.explicit_http_config.http2_protocol_options.SetInParent()


def cluster(name: str, lb: int = cluster_pb2.Cluster.ROUND_ROBIN, eds_name: str = "", **fields: Any) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, lb_policy=lb, **fields)
    c.connect_timeout.FromMilliseconds(1000)
    c.eds_cluster_config.eds_config.CopyFrom(ADS)
    if eds_name:
        c.eds_cluster_config.service_name = eds_name
    # Envoy talks HTTP/2 (gRPC) to the upstreams; proxyless clients ignore it.
    c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(pack(_H2))
    return c


def endpoints(name: str, addresses: Sequence[str | tuple[str, int]], *, zone: str = "", priority: int = 0,
              health: int = 0, locality_weight: int = 1) -> endpoint_pb2.ClusterLoadAssignment:  # fmt: skip
    """A ClusterLoadAssignment with one locality; an address is "host:port"
    or ("host:port", weight)."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    loc = cla.endpoints.add()
    loc.locality.zone = zone
    loc.priority = priority
    loc.load_balancing_weight.value = locality_weight
    for a in addresses:
        addr, weight = (a, 0) if isinstance(a, str) else a
        host, _, port = addr.rpartition(":")
        lb = loc.lb_endpoints.add()
        lb.endpoint.address.socket_address.address = host
        lb.endpoint.address.socket_address.port_value = int(port)
        lb.health_status = health
        if weight:
            lb.load_balancing_weight.value = weight
    return cla


def header(name: str, exact: str | None = None, present: bool | None = None, invert: bool = False) -> route_components_pb2.HeaderMatcher:
    h = route_components_pb2.HeaderMatcher(name=name, invert_match=invert)
    if exact is not None:
        h.string_match.exact = exact
    else:
        h.present_match = bool(present)
    return h


def service(name: str, clusters: Mapping[str, Sequence[str]], routes: Sequence[route_components_pb2.Route] | None = None,
            envoy_ports: Mapping[str, int] | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """A snapshot for one service: listener ``name`` → RDS ``name-routes`` →
    the given clusters (each with its endpoint addresses)."""
    rname = f"{name}-routes"
    routes = list(routes) if routes is not None else [route("/", next(iter(clusters)))]
    return {
        LDS: {name: listener(name, rname, envoy_ports)},
        RDS: {rname: route_config(rname, [name, "*"], routes)},
        CDS: {c: cluster(c) for c in clusters},
        EDS: {c: endpoints(c, addrs) for c, addrs in clusters.items()},
    }


def merge(*snapshots: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {t: {} for t in TYPES}
    for s in snapshots:
        for t, res in s.items():
            out[t].update(res)
    return out


def bootstrap(*servers: str, node: str = "meshlib", features: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "xds_servers": [{"server_uri": s, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3", *features]} for s in servers],
        "node": {"id": node, "cluster": "test", "locality": {"zone": "a"}},
    }

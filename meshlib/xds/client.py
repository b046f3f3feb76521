"""The ADS client: one state-of-the-world ``StreamAggregatedResources`` stream.

* Subscriptions per type (:meth:`AdsClient.subscribe`), sent as they change;
  ``version_info`` kept per type across reconnects, the nonce per stream.
* Every response is ACKed (new version) or NACKed (previous version and an
  ``error_detail`` naming each bad resource and why); the valid resources of a
  partly bad response are used (gRFC A46).
* LDS/CDS responses are the full state: a cached resource missing from one is
  deleted. Data errors (NACK, deletion) keep the cached resource unless the
  server has ``fail_on_data_errors`` (gRFC A88).
* A resource not received within the does-not-exist timeout (15 s), counted only
  while the stream is connected, is reported as not existing (gRFC A57).
* A broken stream is re-opened after a jittered exponential backoff, reset once
  a response arrives; the cache is kept and everything is re-subscribed. When
  the stream fails before any response and something watched is not cached, the
  next ``xds_servers`` entry is tried; a higher-priority server that answers
  again takes over (gRFC A71).

Watcher callbacks run on the stream thread, one at a time.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from typing import Any, Callable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from ..clock import SYSTEM_CLOCK, Clock
from .._background import PeriodicWorker
from ._proto import ResourceError
from .bootstrap import Bootstrap, XdsServer
from .resources import FULL_STATE, SHORT, TYPES, NamedError, decode
from .state import ResourceState

__all__ = ["AdsClient", "Watcher"]

log = logging.getLogger("meshlib.xds")

#: ``watcher(type_url, name, value)``: value None means the resource does not
#: exist (timer, deletion) or was dropped after a data error.
Watcher = Callable[[str, str, Any], None]
USER_AGENT = "meshlib"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("meshlib")
    except Exception:
        return "dev"


class AdsClient:
    def __init__(
        self,
        bootstrap: Bootstrap,
        watcher: Watcher,
        *,
        clock: Clock = SYSTEM_CLOCK,
        does_not_exist_timeout: float = 15.0,
        backoff_base: float = 1.0,
        backoff_max: float = 120.0,
        connect_timeout: float = 20.0,
        rng: random.Random | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self._watcher = watcher
        self.clock = clock
        self.dne_timeout = does_not_exist_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._subs: dict[str, set[str]] = {t: set() for t in TYPES}
        self._states: dict[tuple[str, str], ResourceState] = {}
        self._versions: dict[str, str] = {}
        self._nonces: dict[str, str] = {}
        self._queue: queue.Queue[Any] | None = None
        self._call: Any = None
        self._first_request = True
        self._handling = False
        self._dirty: set[str] = set()
        self.server_index = 0
        self._back_to_primary = False
        self._probe: threading.Thread | None = None
        self.connected = False
        self.counters = {"responses": 0, "acks": 0, "nacks": 0, "reconnects": 0, "fallbacks": 0,
                         "resource_updates_valid": 0, "resource_updates_invalid": 0}  # fmt: skip
        self._node = self._make_node()
        self._thread = threading.Thread(target=self._run, name="meshlib-xds-ads", daemon=True)
        self._timers = PeriodicWorker("xds-timers", 0.05, self.check_timers)

    # -- public ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._timers.start()

    def close(self) -> None:
        self._stop.set()
        self._timers.stop()
        with self._lock:
            call, q = self._call, self._queue
        if call is not None:
            call.cancel()
        if q is not None:
            q.put(None)
        for thread in (self._thread, self._probe):
            if thread is not None and thread.is_alive() and thread is not threading.current_thread():
                thread.join(6.0)

    @property
    def server(self) -> XdsServer:
        return self.bootstrap.servers[self.server_index]

    def subscribe(self, type_url: str, names: set[str] | frozenset[str]) -> None:
        """Watch exactly ``names`` of ``type_url`` from now on."""
        with self._lock:
            old = self._subs[type_url]
            new = set(names)
            if new == old:
                return
            for gone in old - new:
                self._states.pop((type_url, gone), None)
            now = self.clock.monotonic()
            for name in new - old:
                st = self._states.setdefault((type_url, name), ResourceState(type_url, name))
                if self.connected and st.value is None:
                    st.requested_at = now
            self._subs[type_url] = new
            self._dirty.add(type_url)
            if not self._handling:
                self._flush()

    @property
    def node(self) -> base_pb2.Node:
        """The node this client sends (the bootstrap's, with meshlib's user agent and features)."""
        return self._node

    def get(self, type_url: str, name: str) -> Any:
        st = self._states.get((type_url, name))
        return None if st is None else st.value

    def resources(self) -> list[ResourceState]:
        with self._lock:
            return [st.copy() for st in self._states.values()]

    # -- requests ----------------------------------------------------------------------

    def _make_node(self) -> base_pb2.Node:
        n = self.bootstrap.node
        node = base_pb2.Node(id=n.id, cluster=n.cluster, user_agent_name=USER_AGENT, user_agent_version=_version())
        node.locality.region, node.locality.zone, node.locality.sub_zone = n.region, n.zone, n.sub_zone
        node.client_features.append("xds.config.resource-in-sotw")
        if n.metadata:
            s = struct_pb2.Struct()
            s.update(dict(n.metadata))
            node.metadata.CopyFrom(s)
        return node

    def _request(self, type_url: str, error: str = "") -> discovery_pb2.DiscoveryRequest:
        req = discovery_pb2.DiscoveryRequest(
            version_info=self._versions.get(type_url, ""),
            resource_names=sorted(self._subs[type_url]),
            type_url=type_url,
            response_nonce=self._nonces.get(type_url, ""),
        )
        if self._first_request:
            req.node.CopyFrom(self._node)
            self._first_request = False
        if error:
            req.error_detail.CopyFrom(status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error))
        return req

    def _flush(self) -> None:
        q = self._queue
        if q is None:
            self._dirty.clear()  # sent with everything else on the next stream
            return
        for t in TYPES:
            if t in self._dirty:
                q.put(self._request(t))
        self._dirty.clear()

    # -- the stream ----------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                answered = self._session(self.server_index)
            except Exception:  # never let the thread die: log, back off, resume
                log.exception("meshlib: xds: the ADS stream failed unexpectedly")
                answered = False
            if self._stop.is_set():
                return
            self.counters["reconnects"] += 1
            if self._back_to_primary:
                self._back_to_primary = False
                self.server_index = 0
                failures = 0
                continue
            if answered:
                failures = 0
                continue  # closed after a response: not an error (A57); reconnect at once
            failures += 1
            if self.server_index + 1 < len(self.bootstrap.servers) and self._missing():
                self.server_index += 1
                self.counters["fallbacks"] += 1
                log.warning("meshlib: xds: falling back to %s", self.server.server_uri)
                continue
            delay = self._rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (failures - 1)))
            log.warning("meshlib: xds: %s unreachable; retrying in %.2fs (keeping the last good config)", self.server.server_uri, delay)
            self._stop.wait(delay)
            if self.server_index > 0:
                self.server_index = 0  # try the primary again first (A71)

    def _missing(self) -> bool:
        with self._lock:
            return any(self._states[(t, n)].value is None for t in TYPES for n in self._subs[t])

    def _channel(self, server: XdsServer) -> grpc.Channel:
        if server.creds_type == "tls":

            def read(path: str) -> bytes | None:
                if not path:
                    return None
                with open(path, "rb") as f:
                    return f.read()

            creds = grpc.ssl_channel_credentials(read(server.ca_certificate_file), read(server.private_key_file), read(server.certificate_file))
            return grpc.secure_channel(server.server_uri, creds)
        return grpc.insecure_channel(server.server_uri)

    def _session(self, index: int) -> bool:
        """One stream to ``servers[index]``; True if it carried a response."""
        server = self.bootstrap.servers[index]
        channel = self._channel(server)
        answered = False
        try:
            if not self._connect(channel, self.connect_timeout):
                return False
            q: queue.Queue[Any] = queue.Queue()
            with self._lock:
                if self._stop.is_set():
                    return False
                self._queue, self._first_request, self._nonces = q, True, {}
                for t in TYPES:
                    if self._subs[t]:
                        q.put(self._request(t))
                self._dirty.clear()
                call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(iter(q.get, None))
                self._call = call
                self.connected = True
                now = self.clock.monotonic()
                for st in self._states.values():
                    st.requested_at = now if st.value is None and st.status == "requested" else None
            if index > 0:
                self._probe = threading.Thread(target=self._probe_primary, args=(call,), name="meshlib-xds-probe", daemon=True)
                self._probe.start()
            try:
                for resp in call:
                    answered = True
                    self._handle(resp, server)
                    del resp  # not kept until the next one: an EDS response of 10,000 endpoints is ~0.5 MB
            except grpc.RpcError as exc:
                if not self._stop.is_set():
                    log.info("meshlib: xds: stream to %s ended: %s", server.server_uri, exc.code() if hasattr(exc, "code") else exc)
            return answered
        finally:
            with self._lock:
                self.connected = False
                self._queue, self._call = None, None
                for st in self._states.values():
                    st.requested_at = None
            channel.close()

    def _connect(self, channel: grpc.Channel, timeout: float) -> bool:
        """Wait until ``channel`` is READY; False on TRANSIENT_FAILURE (a refused
        or failed connection, the signal for fallback in gRFC A71), on timeout
        or on close."""
        event = threading.Event()
        state: list[grpc.ChannelConnectivity] = []

        def seen(s: grpc.ChannelConnectivity) -> None:
            if s in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
                state.append(s)
                event.set()

        channel.subscribe(seen, try_to_connect=True)
        try:
            end = self.clock.monotonic() + timeout
            while not event.wait(0.05):
                if self._stop.is_set() or self.clock.monotonic() > end:
                    return False
            return state[0] is grpc.ChannelConnectivity.READY
        finally:
            channel.unsubscribe(seen)

    def _probe_primary(self, fallback_call: Any) -> None:
        """While on a fallback server, see whether the primary answers again;
        if it does, end the fallback stream so the loop goes back to it."""
        primary = self.bootstrap.servers[0]
        wait = self.backoff_base
        while not self._stop.is_set() and self._call is fallback_call:
            self._stop.wait(wait)
            wait = min(self.backoff_max, wait * 2)
            channel = self._channel(primary)
            try:
                if not self._connect(channel, min(self.connect_timeout, 5.0)):
                    continue
                with self._lock:
                    reqs = [discovery_pb2.DiscoveryRequest(resource_names=sorted(self._subs[t]), type_url=t) for t in TYPES if self._subs[t]]
                if not reqs:
                    continue
                reqs[0].node.CopyFrom(self._node)
                call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(iter(reqs), timeout=5.0)
                next(iter(call))
                call.cancel()
            except (grpc.RpcError, StopIteration):
                continue
            finally:
                channel.close()
            log.warning("meshlib: xds: primary server %s is back; switching to it", primary.server_uri)
            if self._call is fallback_call:
                self._back_to_primary = True
                fallback_call.cancel()
            return

    # -- responses ---------------------------------------------------------------------

    def _handle(self, resp: discovery_pb2.DiscoveryResponse, server: XdsServer) -> None:
        t = resp.type_url
        notes: list[tuple[str, str, Any]] = []
        with self._lock:
            self.counters["responses"] += 1
            self._nonces[t] = resp.nonce
            if t not in self._subs:
                q = self._queue
                if q is not None:
                    q.put(discovery_pb2.DiscoveryRequest(type_url=t, response_nonce=resp.nonce, error_detail=status_pb2.Status(code=3, message=f"unknown type {t}")))
                return
            errors, valid, invalid = self._decode(t, resp)
            self._apply(t, resp.version_info, valid, invalid, server, notes)
            if errors:
                self.counters["nacks"] += 1
            else:
                self._versions[t] = resp.version_info
                self.counters["acks"] += 1
            self._handling = True
        try:
            for note in notes:
                try:
                    self._watcher(*note)
                except Exception:
                    log.exception("meshlib: xds: applying %s %r failed", SHORT[note[0]], note[1])
        finally:
            with self._lock:
                self._handling = False
                q = self._queue
                if q is not None:
                    q.put(self._request(t, "; ".join(errors)))
                self._dirty.discard(t)
                self._flush()
        if errors:
            log.warning("meshlib: xds: NACKed %s version %r: %s", SHORT[t], resp.version_info, "; ".join(errors))

    def _decode(self, t: str, resp: Any) -> tuple[list[str], dict[str, Any], dict[str, str]]:
        errors: list[str] = []
        valid: dict[str, Any] = {}
        invalid: dict[str, str] = {}
        seen: set[str] = set()
        for any_msg in resp.resources:
            try:
                name, value, _ = decode(t, any_msg, lambda n: self.get(t, n))
            except NamedError as exc:
                name, reason = exc.resource, str(exc)
                errors.append(reason)
                invalid[name] = reason
                valid.pop(name, None)
                seen.add(name)
                continue
            except ResourceError as exc:
                errors.append(str(exc))
                continue
            if name in seen:
                reason = f"{name}: appears twice in one response"
                errors.append(reason)
                invalid[name] = reason
                valid.pop(name, None)
                continue
            seen.add(name)
            valid[name] = value
        return errors, valid, invalid

    def _apply(self, t: str, version: str, valid: dict[str, Any], invalid: dict[str, str], server: XdsServer, notes: list) -> None:
        now = time.time()  # shown in the status only
        subs = self._subs[t]
        strict = server.fail_on_data_errors
        for name, value in valid.items():
            if name not in subs:
                continue  # not asked for: ignored
            st = self._states[(t, name)]
            st.accept(value, version, now)
            self.counters["resource_updates_valid"] += 1
            notes.append((t, name, value))
        for name, reason in invalid.items():
            if name not in subs:
                continue
            st = self._states[(t, name)]
            self.counters["resource_updates_invalid"] += 1
            st.reject(reason, now, drop=strict)
            if st.value is None:  # dropped, or never had a good copy: the watcher stops waiting for it
                notes.append((t, name, None))
        if t in FULL_STATE:
            for name in subs - valid.keys() - invalid.keys():
                st = self._states[(t, name)]
                if st.value is not None and st.delete(now, drop=strict):
                    log.warning("meshlib: xds: %s %r deleted by the server%s", SHORT[t], name,
                                "" if strict else "; keeping the cached copy (fail_on_data_errors is off)")  # fmt: skip
                    notes.append((t, name, None))

    def check_timers(self) -> None:
        """Report resources whose does-not-exist timer ran out (called by a
        timer thread every 50 ms; tests with a ManualClock call it directly)."""
        expired = []
        # gRFC A88: with resource_timer_is_transient_error the timer is 30 s and
        # its end a transient "timeout", not a verdict that the resource does not exist.
        transient = self.server.resource_timer_is_transient
        timeout = max(self.dne_timeout, 30.0) if transient else self.dne_timeout
        with self._lock:
            if not self.connected:
                return
            now = self.clock.monotonic()
            for st in self._states.values():
                if st.requested_at is not None and st.value is None and now - st.requested_at >= timeout:
                    st.requested_at = None
                    st.status = "timeout" if transient else "does-not-exist"
                    expired.append((st.type_url, st.name))
        for t, name in expired:
            log.warning("meshlib: xds: %s %r %s (nothing received in %gs)", SHORT[t], name,
                        "timed out" if transient else "does not exist", timeout)  # fmt: skip
            try:
                self._watcher(t, name, None)
            except Exception:
                log.exception("meshlib: xds: applying %s %r failed", SHORT[t], name)

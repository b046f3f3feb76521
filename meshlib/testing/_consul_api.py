"""The Consul double's HTTP API: blocking reads of the health and catalog
endpoints, agent registration and checks, ACL tokens, and the request handler.

:class:`ApiMixin` is the part of :class:`~meshlib.testing.consul_double.ConsulDouble`
that answers requests; it reads and changes the double's state under
``self._cond``.
"""

from __future__ import annotations

import copy
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from ._consul_model import DEFAULT_WAIT, MAX_WAIT, _Check, _HTTPError, _Node, _Service, _duration


class ApiMixin:
    """Answers the HTTP API from the double's state (see ConsulDouble)."""

    datacenter: str
    datacenters: tuple[str, ...]
    node: str
    acl_token: str | None
    zero_index: bool
    ignore_blocking: bool
    requests: Counter[str]
    blocked: Counter[str]
    _cond: threading.Condition
    _epoch: int
    _stop: threading.Event
    _nodes: dict[tuple[str, str], _Node]
    _services: dict[tuple[str, str, str], _Service]
    _checks: dict[tuple[str, str, str], _Check]
    _by_service: dict[tuple[str, str, str], dict[str, _Check]]
    _by_name: dict[tuple[str, str], set[tuple[str, str, str]]]
    _raw: dict[tuple[str, str], list[Any]]
    _svc_index: dict[tuple[str, str], int]
    _table_index: dict[str, int]
    _connections: set[socket.socket]
    _conn_lock: threading.Lock

    # The state changes the API makes (ConsulDouble implements them).
    _register: Callable[[dict[str, Any], bool], None]
    _deregister: Callable[[str, str, str], bool]
    _set_status: Callable[[_Check, str, str], None]

    # -- reads (callers hold self._cond) ---------------------------------------------

    def _health(self, dc: str, name: str, *, passing: bool, tags: list[str]) -> list[Any]:
        out: list[Any] = []
        for key in sorted(self._by_name.get((dc, name), ())):
            svc = self._services[key]
            node_name = key[1]
            if not all(t in svc.tags for t in tags):
                continue
            node = self._nodes[(dc, node_name)]
            checks = [
                {"Node": node.name, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": node.serf_status, "Notes": "", "Output": "",
                 "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "", "Namespace": "default"}
            ]  # fmt: skip
            checks += [c.as_json(svc.tags) for _, c in sorted(self._by_service.get(key, {}).items())]
            if passing and any(c["Status"] != "passing" for c in checks):
                continue
            out.append(
                {
                    "Node": {"ID": "", "Node": node.name, "Address": node.address, "Datacenter": dc, "TaggedAddresses": {"lan": node.address, "wan": node.address}, "Meta": {}},
                    "Service": svc.as_json(),
                    "Checks": checks,
                }
            )
        out += copy.deepcopy(self._raw.get((dc, name), []))
        return out

    def _catalog(self, dc: str) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for (d, _, _), svc in self._services.items():
            if d == dc:
                out.setdefault(svc.name, set()).update(svc.tags)
        return {name: sorted(tags) for name, tags in sorted(out.items())}

    def _blocking(self, path: str, params: dict[str, list[str]], index_of: Callable[[], int]) -> int:
        """Wait as a blocking query does; return the index to answer with."""
        if "index" not in params or self.ignore_blocking:
            return index_of()
        try:
            want = int(params["index"][0])
        except ValueError:
            raise _HTTPError(400, f"Invalid index: {params['index'][0]!r}") from None
        wait = _duration(params["wait"][0], "wait") if "wait" in params else DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
        deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
        epoch = self._epoch
        self.blocked[path] += 1
        try:
            while index_of() <= want and self._epoch == epoch and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        finally:
            self.blocked[path] -= 1
        return index_of()

    # -- HTTP ----------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        self.requests[path if not path.startswith("/v1/agent/check/") else "/v1/agent/check/" + path.split("/")[4]] += 1
        self._authorize(query, headers)
        dc = query.get("dc", [self.datacenter])[0]
        if dc not in self.datacenters:
            raise _HTTPError(500, "No path to datacenter")
        if method == "GET" and path.startswith("/v1/health/service/"):
            self._only(query, {"passing", "tag", "dc", "index", "wait", "token", "stale", "consistent"})
            name = unquote(path[len("/v1/health/service/") :])
            passing = "passing" in query and query["passing"][0].lower() not in ("0", "false")
            with self._cond:
                idx = self._blocking(path, query, lambda: self._svc_index.get((dc, name), self._table_index[dc]))
                entries = self._health(dc, name, passing=passing, tags=query.get("tag", []))
            return 200, entries, self._index_headers(idx)
        if method == "GET" and path == "/v1/catalog/services":
            self._only(query, {"dc", "index", "wait", "token", "stale", "consistent"})
            with self._cond:
                idx = self._blocking(path, query, lambda: self._table_index[dc])
                services = self._catalog(dc)
            return 200, services, self._index_headers(idx)
        if method == "PUT" and path == "/v1/agent/service/register":
            try:
                data = json.loads(body or b"{}")
            except ValueError as exc:
                raise _HTTPError(400, f"Request decode failed: {exc}") from None
            if not isinstance(data, dict):
                raise _HTTPError(400, "Request decode failed: not an object")
            with self._cond:
                self._register(data, "replace-existing-checks" in query)
            return 200, None, {}
        if method == "PUT" and path.startswith("/v1/agent/service/deregister/"):
            sid = unquote(path[len("/v1/agent/service/deregister/") :])
            with self._cond:
                self._deregister(self.datacenter, self.node, sid)
            return 200, None, {}
        if method == "GET" and path.startswith("/v1/agent/service/"):
            sid = unquote(path[len("/v1/agent/service/") :])
            with self._cond:
                svc = self._services.get((self.datacenter, self.node, sid))
                if svc is None:
                    raise _HTTPError(404, f"unknown service ID: {sid}")
                return 200, svc.as_json(), {}
        m = re.match(r"^/v1/agent/check/(pass|warn|fail)/(.+)$", path)
        if method == "PUT" and m:
            status = {"pass": "passing", "warn": "warning", "fail": "critical"}[m.group(1)]
            cid = unquote(m.group(2))
            with self._cond:
                check = self._checks.get((self.datacenter, self.node, cid))
                if check is None or check.ttl is None:
                    raise _HTTPError(500, f'CheckID "{cid}" does not have associated TTL')
                self._set_status(check, status, query.get("note", [""])[0])
            return 200, None, {}
        if method == "GET" and path == "/v1/status/leader":
            return 200, "127.0.0.1:8300", {}
        raise _HTTPError(404, f"the Consul double does not implement {method} {path}")

    def _authorize(self, query: dict[str, list[str]], headers: Any) -> None:
        if self.acl_token is None:
            return
        token = headers.get("X-Consul-Token") or query.get("token", [""])[0]
        auth = headers.get("Authorization", "")
        if not token and auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
        if not token:
            raise _HTTPError(403, "Permission denied")
        if token != self.acl_token:
            raise _HTTPError(403, "ACL not found")

    @staticmethod
    def _only(query: dict[str, list[str]], allowed: set[str]) -> None:
        extra = set(query) - allowed
        if extra:
            raise _HTTPError(400, f"the Consul double does not implement the query parameters {sorted(extra)}")

    def _index_headers(self, idx: int) -> dict[str, str]:
        return {"X-Consul-Index": "0" if self.zero_index else str(idx), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            (self._connections.add if add else self._connections.discard)(conn)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    double: ApiMixin

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.double.track(self.connection, True)

    def finish(self) -> None:
        self.double.track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, data, headers = self.double.handle(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True), self.headers, body)
            payload = b"true" if data is None else json.dumps(data).encode()
            ctype = "application/json"
        except _HTTPError as exc:
            status, headers, payload, ctype = exc.status, {}, exc.text.encode(), "text/plain; charset=utf-8"
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read the state, not the access log."""

"""A Consul HTTP API double: the documented endpoints meshlib uses, in-process, on 127.0.0.1.

No Consul binary can be installed here, so meshlib's Consul support is tested
against this server. It follows Consul's API documentation
(``website/content/api-docs/``: ``health.mdx``, ``catalog.mdx``,
``agent/service.mdx``, ``agent/check.mdx``, ``features/blocking.mdx``), not
meshlib's code:

- ``GET /v1/health/service/:service`` with ``passing``, ``tag`` (repeatable),
  ``dc``; entries ``{Node, Service, Checks}``; ``passing`` keeps entries
  whose every check (node checks included) is ``passing``.
- ``GET /v1/catalog/services`` with ``dc``: ``{name: [tags]}``.
- Blocking queries on both: ``index`` and ``wait`` (default 5m, at most 10m,
  plus up to wait/16 of jitter); ``X-Consul-Index`` on every answer; an
  answer is no guarantee of a change.
- ``PUT /v1/agent/service/register`` (keys case-insensitive, snake_case too,
  as Consul's decoder), with ``Check``/``Checks`` (TTL or HTTP),
  ``Weights`` (default Passing 1, Warning 1), ``Meta``, ``Tags``,
  ``?replace-existing-checks``; ``PUT /v1/agent/service/deregister/:id``;
  ``GET /v1/agent/service/:id``.
- ``PUT /v1/agent/check/pass|warn|fail/:check_id``. A TTL check starts
  ``critical`` unless ``Status`` is given, and goes ``critical`` when its
  TTL passes without an update. ``DeregisterCriticalServiceAfter`` (at least
  1m, as Consul clamps it) removes a service whose check stayed critical that
  long. HTTP checks are run every ``Interval``: 2xx passing, 429 warning,
  anything else critical.
- ACLs: with ``acl_token`` set, a request must carry that token
  (``X-Consul-Token``, ``Authorization: Bearer``, or ``?token=``), else 403.
- Unknown datacenter: 500 ``No path to datacenter``. Query parameters the
  double does not implement (``filter``, ``near``, ...) are a 400, so a test
  notices if meshlib starts relying on one.

Knobs for failure tests: :meth:`down` / :meth:`up` (stop answering, drop open
connections, come back on the same port), :meth:`reset_index` (a snapshot
restore: indexes go backwards and blocked queries return), ``zero_index``
(answer ``X-Consul-Index: 0``, an old Consul bug), ``ignore_blocking``
(answer every query at once: a server that would make a naive loop spin),
:meth:`add_raw_entry` (a malformed entry in a service's results), and
``requests`` (counts by path). Time comes from ``clock`` (default
``time.monotonic``); with ``tick_interval=None`` nothing runs in the
background and tests call :meth:`tick` after moving their clock.
"""

from __future__ import annotations

import copy
import json
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from .._background import PeriodicWorker

__all__ = ["ConsulDouble"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
MIN_DEREGISTER = 60.0


class _HTTPError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _duration(text: str, what: str) -> float:
    total, rest = 0.0, text.strip()
    while rest:
        m = re.match(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", rest)
        if not m:
            raise _HTTPError(400, f"Invalid {what}: {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        rest = rest[m.end() :]
    return total


def _fold(data: Any) -> Any:
    """Consul decodes JSON keys case-insensitively and accepts snake_case:
    fold keys to lower case without underscores (values untouched)."""
    if isinstance(data, dict):
        return {str(k).replace("_", "").lower(): v for k, v in data.items()}
    return data


@dataclass
class _Check:
    check_id: str
    name: str
    node: str
    dc: str
    service_id: str = ""
    service_name: str = ""
    status: str = "critical"
    output: str = ""
    ttl: float | None = None
    http: str = ""
    interval: float = 10.0
    timeout: float = 10.0
    deregister_after: float | None = None
    expires_at: float | None = None
    next_run: float = 0.0
    critical_since: float | None = None
    modify_index: int = 0

    def as_json(self, tags: list[str]) -> dict[str, Any]:
        return {
            "Node": self.node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": "",
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(tags) if self.service_id else [],
            "Type": "ttl" if self.ttl is not None else ("http" if self.http else ""),
            "Namespace": "default",
        }


@dataclass
class _Service:
    id: str
    name: str
    node: str
    dc: str
    port: int = 0
    address: str = ""
    tags: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    create_index: int = 0
    modify_index: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
            "Meta": dict(self.meta),
            "Port": self.port,
            "Weights": dict(self.weights),
            "EnableTagOverride": False,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "Namespace": "default",
            "Datacenter": self.dc,
        }


@dataclass
class _Node:
    name: str
    address: str
    dc: str
    serf_status: str = "passing"


class ConsulDouble:
    """Serve the Consul HTTP API on ``127.0.0.1:port`` (a free port by default) from a thread."""

    def __init__(
        self,
        *,
        datacenters: tuple[str, ...] = ("dc1",),
        node: str = "node-1",
        node_address: str = "127.0.0.1",
        acl_token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_interval: float | None = 0.05,
        port: int = 0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``tls``: (certificate, key) PEM paths to serve https instead of http."""
        self.datacenters = datacenters
        self.datacenter = datacenters[0]
        self.node = node
        self.acl_token = acl_token
        self.tls = tls
        self.clock = clock
        self.zero_index = False
        self.ignore_blocking = False
        self.requests: Counter[str] = Counter()
        self.blocked: Counter[str] = Counter()  # blocking queries hanging right now, by path
        self._cond = threading.Condition()
        self._index = 1
        self._epoch = 0  # bumped by reset_index: blocked queries return
        self._nodes: dict[tuple[str, str], _Node] = {(self.datacenter, node): _Node(node, node_address, self.datacenter)}
        self._services: dict[tuple[str, str, str], _Service] = {}  # (dc, node, service id)
        self._checks: dict[tuple[str, str, str], _Check] = {}  # (dc, node, check id)
        self._by_service: dict[tuple[str, str, str], dict[str, _Check]] = {}  # (dc, node, service id) -> its checks
        self._by_name: dict[tuple[str, str], set[tuple[str, str, str]]] = {}  # (dc, service name) -> service keys
        self._raw: dict[tuple[str, str], list[Any]] = {}  # (dc, service name) -> malformed entries
        self._svc_index: dict[tuple[str, str], int] = {}
        self._table_index: dict[str, int] = {dc: 1 for dc in datacenters}
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.port = port
        self.up()
        self._ticker: PeriodicWorker | None = None
        if tick_interval is not None:
            # PeriodicWorker logs an exception in tick() and goes on, so TTL
            # checks keep expiring after, say, a malformed HTTP check URL.
            self._ticker = PeriodicWorker("consul-double-ticker", tick_interval, self.tick)
            self._ticker.start()

    # -- lifecycle ----------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The value for ``MESHLIB_DISCOVERY``."""
        return f"consul://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Start answering (again, on the same port)."""
        if self._server is not None:
            return
        double = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 1024  # many watchers connect at once (Go listens with the system's somaxconn)

        class Handler(_Handler):
            pass

        Handler.double = double
        server = Server(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._serve_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="consul-double", daemon=True)
        self._serve_thread.start()

    def down(self) -> None:
        """Stop answering: close the listener and every open connection
        (blocked queries see their connection drop)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def close(self) -> None:
        self._stop.set()
        self.down()
        if self._ticker is not None:
            self._ticker.stop(2.0)

    def __enter__(self) -> "ConsulDouble":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- knobs and helpers for tests ----------------------------------------------

    def reset_index(self, to: int = 1) -> None:
        """Simulate a snapshot restore: every index drops to at most ``to`` and
        blocked queries return with the lower index."""
        with self._cond:
            self._index = max(1, to)
            for key in self._svc_index:
                self._svc_index[key] = min(self._svc_index[key], self._index)
            for dc in self._table_index:
                self._table_index[dc] = min(self._table_index[dc], self._index)
            for svc in self._services.values():
                svc.create_index = min(svc.create_index, self._index)
                svc.modify_index = min(svc.modify_index, self._index)
            self._epoch += 1
            self._cond.notify_all()

    def add_instance(
        self,
        service: str,
        port: int,
        *,
        address: str = "",
        service_id: str | None = None,
        node: str | None = None,
        node_address: str = "127.0.0.1",
        tags: list[str] | None = None,
        meta: dict[str, str] | None = None,
        weights: dict[str, int] | None = None,
        status: str = "passing",
        dc: str | None = None,
    ) -> str:
        """Put an instance in the catalog (as ``PUT /v1/catalog/register``
        would), with one service check in ``status``. Returns its ID."""
        dc = dc or self.datacenter
        node = node or self.node
        sid = service_id or f"{service}-{port}"
        with self._cond:
            self._nodes.setdefault((dc, node), _Node(node, node_address, dc))
            idx = self._bump()
            svc = _Service(sid, service, node, dc, port, address, list(tags or []), dict(meta or {}), dict(weights or {"Passing": 1, "Warning": 1}), idx, idx)
            self._put_service(svc)
            self._put_check(_Check(f"service:{sid}", f"Service '{service}' check", node, dc, sid, service, status, modify_index=idx))
            self._touch(dc, service, idx)
        return sid

    def remove_instance(self, service_id: str, *, node: str | None = None, dc: str | None = None) -> None:
        with self._cond:
            self._deregister(dc or self.datacenter, node or self.node, service_id)

    def set_status(self, check_id: str, status: str, *, node: str | None = None, dc: str | None = None) -> None:
        with self._cond:
            check = self._checks[(dc or self.datacenter, node or self.node, check_id)]
            self._set_status(check, status, "set by the test")

    def set_node_health(self, status: str, *, node: str | None = None, dc: str | None = None) -> None:
        """The node's ``serfHealth`` check (``passing`` or ``critical``)."""
        dc = dc or self.datacenter
        with self._cond:
            n = self._nodes[(dc, node or self.node)]
            n.serf_status = status
            idx = self._bump()
            for svc in self._services.values():
                if svc.dc == dc and svc.node == n.name:
                    self._touch(dc, svc.name, idx)

    def add_raw_entry(self, service: str, entry: Any, *, dc: str | None = None) -> None:
        """Append ``entry`` as-is to ``service``'s health results (a malformed entry)."""
        dc = dc or self.datacenter
        with self._cond:
            self._raw.setdefault((dc, service), []).append(copy.deepcopy(entry))
            self._touch(dc, service, self._bump())

    def clear_raw_entries(self, service: str, *, dc: str | None = None) -> None:
        dc = dc or self.datacenter
        with self._cond:
            self._raw.pop((dc, service), None)
            self._touch(dc, service, self._bump())

    def instances(self, service: str, *, dc: str | None = None) -> list[dict[str, Any]]:
        """``service``'s entries as ``/v1/health/service`` returns them (no filter)."""
        with self._cond:
            return self._health(dc or self.datacenter, service, passing=False, tags=[])

    def check_status(self, check_id: str, *, node: str | None = None, dc: str | None = None) -> str | None:
        with self._cond:
            check = self._checks.get((dc or self.datacenter, node or self.node, check_id))
            return None if check is None else check.status

    def service_ids(self, *, dc: str | None = None) -> set[str]:
        dc = dc or self.datacenter
        with self._cond:
            return {sid for (d, _, sid) in self._services if d == dc}

    # -- time -------------------------------------------------------------------

    def tick(self) -> None:
        """Expire TTL checks, run due HTTP checks, reap long-critical services."""
        now = self.clock()
        due_http: list[_Check] = []
        with self._cond:
            for check in list(self._checks.values()):
                if check.ttl is not None and check.expires_at is not None and now >= check.expires_at and check.status != "critical":
                    self._set_status(check, "critical", f"TTL expired (last update {check.ttl:g}s ago)")
                if check.http and now >= check.next_run:
                    check.next_run = now + check.interval
                    due_http.append(check)
            for (dc, node, _), check in list(self._checks.items()):
                if (
                    check.status == "critical"
                    and check.deregister_after is not None
                    and check.critical_since is not None
                    and now - check.critical_since >= check.deregister_after
                    and check.service_id
                ):
                    self._deregister(dc, node, check.service_id)
        for check in due_http:
            status, output = self._run_http(check)
            with self._cond:
                if self._checks.get((check.dc, check.node, check.check_id)) is check:
                    self._set_status(check, status, output)

    @staticmethod
    def _run_http(check: _Check) -> tuple[str, str]:
        try:
            with urllib.request.urlopen(check.http, timeout=check.timeout) as resp:
                code = resp.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except OSError as exc:
            return "critical", f"Get {check.http!r}: {exc}"
        if 200 <= code < 300:
            return "passing", f"HTTP GET {check.http}: {code}"
        if code == 429:
            return "warning", f"HTTP GET {check.http}: 429 Too Many Requests"
        return "critical", f"HTTP GET {check.http}: {code}"

    # -- state changes (callers hold self._cond) -----------------------------------

    def _bump(self) -> int:
        self._index += 1
        return self._index

    def _touch(self, dc: str, service: str, idx: int) -> None:
        self._svc_index[(dc, service)] = idx
        self._table_index[dc] = idx
        self._cond.notify_all()

    def _set_status(self, check: _Check, status: str, output: str) -> None:
        now = self.clock()
        if check.ttl is not None:
            check.expires_at = now + check.ttl
        check.output = output
        if status == check.status:
            return
        check.status = status
        check.critical_since = now if status == "critical" else None
        idx = self._bump()
        check.modify_index = idx
        svc = self._services.get((check.dc, check.node, check.service_id))
        if svc is not None:
            self._touch(svc.dc, svc.name, idx)

    def _put_service(self, svc: _Service) -> None:
        key = (svc.dc, svc.node, svc.id)
        self._services[key] = svc
        self._by_name.setdefault((svc.dc, svc.name), set()).add(key)

    def _put_check(self, check: _Check) -> None:
        self._checks[(check.dc, check.node, check.check_id)] = check
        if check.service_id:
            self._by_service.setdefault((check.dc, check.node, check.service_id), {})[check.check_id] = check

    def _drop_checks(self, dc: str, node: str, service_id: str) -> None:
        for cid in self._by_service.pop((dc, node, service_id), {}):
            self._checks.pop((dc, node, cid), None)

    def _deregister(self, dc: str, node: str, service_id: str) -> bool:
        svc = self._services.pop((dc, node, service_id), None)
        if svc is None:
            return False
        self._by_name.get((dc, svc.name), set()).discard((dc, node, service_id))
        self._drop_checks(dc, node, service_id)
        self._touch(dc, svc.name, self._bump())
        return True

    def _register(self, body: dict[str, Any], replace_checks: bool) -> None:
        b = _fold(body)
        name = b.get("name")
        if not isinstance(name, str) or not name:
            raise _HTTPError(400, "Invalid Service Meta: missing service name")  # Consul: "Missing service name"
        sid = b.get("id") or name
        port = b.get("port", 0) or 0
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise _HTTPError(400, f"Request decode failed: invalid port {port!r}")
        tags = b.get("tags") or []
        meta = b.get("meta") or {}
        weights = _fold(b.get("weights") or {})
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _HTTPError(400, "Request decode failed: Tags must be a list of strings")
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise _HTTPError(400, "Invalid Service Meta: values must be strings")
        passing = int(weights.get("passing", 1) or 1)
        warning = int(weights.get("warning", 1) if "warning" in weights else 1)
        if passing < 1 or warning < 0:
            raise _HTTPError(400, "Invalid Weights: Passing must be greater than 0")
        checks = []
        if b.get("check"):
            checks.append(_fold(b["check"]))
        checks += [_fold(c) for c in (b.get("checks") or [])]
        dc, node = self.datacenter, self.node
        now = self.clock()
        idx = self._bump()
        old = self._services.get((dc, node, sid))
        svc = _Service(sid, name, node, dc, port, str(b.get("address") or ""), list(tags), dict(meta), {"Passing": passing, "Warning": warning}, old.create_index if old else idx, idx)
        if old is not None and old.name != name:
            self._touch(dc, old.name, idx)
        if old is not None:
            self._by_name.get((dc, old.name), set()).discard((dc, node, sid))
        self._put_service(svc)
        if replace_checks:
            self._drop_checks(dc, node, sid)
        for i, c in enumerate(checks):
            cid = c.get("checkid") or c.get("id") or (f"service:{sid}" if len(checks) == 1 else f"service:{sid}:{i + 1}")
            ttl = _duration(c["ttl"], "TTL") if c.get("ttl") else None
            http = str(c.get("http") or "")
            if ttl is None and not http:
                raise _HTTPError(400, "Invalid check: the double implements TTL and HTTP checks")
            interval = _duration(c["interval"], "Interval") if c.get("interval") else 0.0
            if http and interval <= 0:
                raise _HTTPError(400, "Invalid check: Interval is required for HTTP checks")
            dereg = _duration(c["deregistercriticalserviceafter"], "DeregisterCriticalServiceAfter") if c.get("deregistercriticalserviceafter") else None
            if dereg is not None:
                dereg = max(dereg, MIN_DEREGISTER)  # Consul clamps to its 1m minimum
            status = str(c.get("status") or "critical")
            if status not in ("passing", "warning", "critical"):
                raise _HTTPError(400, f"Invalid check status: {status!r}")
            check = _Check(
                cid,
                str(c.get("name") or f"Service '{name}' check"),
                node,
                dc,
                sid,
                name,
                status,
                ttl=ttl,
                http=http,
                interval=interval or 10.0,
                timeout=_duration(c["timeout"], "Timeout") if c.get("timeout") else 10.0,
                deregister_after=dereg,
                expires_at=now + ttl if ttl is not None else None,
                next_run=now,
                critical_since=now if status == "critical" else None,
                modify_index=idx,
            )
            self._put_check(check)
        self._touch(dc, name, idx)

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
    double: ConsulDouble

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

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
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import ThreadingHTTPServer
from typing import Any, Callable

from .._background import PeriodicWorker
from ._consul_api import ApiMixin, _Handler
from ._consul_model import MIN_DEREGISTER, _Check, _HTTPError, _Node, _Service, _duration, _fold

__all__ = ["ConsulDouble"]

class ConsulDouble(ApiMixin):
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

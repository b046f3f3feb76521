"""The admin endpoint: a small HTTP server thread owned by a Mesh (Envoy's admin, read-only).

Off by default; ``MESHLIB_ADMIN=127.0.0.1:9901`` turns it on (a loopback
address unless ``MESHLIB_ADMIN_ALLOW_REMOTE=true``: it has no
authentication). GET only; anything else is answered 405.

* ``/stats/prometheus`` — the Prometheus text format (prometheus_client's
  own writer when installed);
* ``/stats`` — ``mesh.stats()`` as JSON;
* ``/clusters`` — every endpoint with health, ejection, active requests,
  EWMA, success rate, weight and zone (and, where load reports are read, the
  latest report and its age: ``load_report_age_s``, ``load_report_waiting``,
  ...), Envoy's ``service::address::field::value`` lines, or JSON with ``?format=json``;
* ``/config_dump`` — the effective configuration as JSON, secrets redacted;
* ``/ready`` — 200 ``LIVE`` once discovery produced a first snapshot for
  every declared service, else 503.

It reads what the call path already keeps (at request time, on its own
thread); it never takes part in a call. ``fetch_stats`` is what
``meshlib stats --url`` runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .errors import MeshError
from .telemetry.export import families, render_text
from .telemetry.redact import redact_mapping

if TYPE_CHECKING:
    from .mesh import Mesh

__all__ = ["AdminServer", "attach", "fetch_stats", "clusters_text", "config_dump", "ready"]

log = logging.getLogger("meshlib")


def attach(mesh: "Mesh") -> "AdminServer | None":
    """Start the admin endpoint of ``mesh`` if its configuration asks for one."""
    address = mesh.config.telemetry.admin
    if not address:
        return None
    host, _, port = address.rpartition(":")
    server = AdminServer(mesh, host.strip("[]"), int(port))
    server.start()
    log.info("meshlib: admin endpoint on %s", server.url)
    return server


def _extra_secrets(mesh: "Mesh") -> frozenset[str]:
    return frozenset(mesh.config.telemetry.redact_headers)


def prometheus_text(mesh: "Mesh") -> tuple[str, str]:
    """(body, content type) of ``/stats/prometheus``."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
    except ImportError:
        return render_text(families(mesh.stats())), "text/plain; version=0.0.4; charset=utf-8"
    from .telemetry.prometheus import MeshCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MeshCollector(mesh))
    return generate_latest(registry).decode("utf-8"), CONTENT_TYPE_LATEST


def clusters_json(mesh: "Mesh") -> dict[str, Any]:
    stats = mesh.stats()
    out = []
    for name, s in stats["services"].items():
        hosts = []
        for e in s["endpoints"]:
            done = e.get("successes", 0) + e.get("failures", 0)
            hosts.append({
                "address": e["address"], "zone": e.get("zone", ""), "weight": e.get("weight"), "priority": e.get("priority"),
                "health": e.get("state"), "healthy": e.get("healthy"), "ejected": e.get("ejected"),
                "rq_active": e.get("active"), "rq_total": e.get("requests"), "rq_success": e.get("successes"),
                "rq_error": e.get("failures"), "cx_connect_fail": e.get("connect_failures"), "ewma_ms": e.get("ewma_ms"),
                "success_rate": round(100.0 * e.get("successes", 0) / done, 3) if done else None,
                **({"load_report": e["load_report"]} if "load_report" in e else {}),
            })  # fmt: skip
        out.append({"name": name, "policy": s.get("policy"), "source": s.get("source"), "version": s.get("version"), "hosts": hosts})
    return {"cluster_statuses": out}


def clusters_text(mesh: "Mesh") -> str:
    """Envoy's ``/clusters`` lines: ``service::address::field::value``."""
    lines = []
    for c in clusters_json(mesh)["cluster_statuses"]:
        lines.append(f"{c['name']}::policy::{c['policy']}")
        for h in c["hosts"]:
            for key in ("health", "rq_active", "rq_total", "rq_success", "rq_error", "cx_connect_fail", "ewma_ms", "success_rate", "weight", "zone", "priority"):
                value = h[key]
                lines.append(f"{c['name']}::{h['address']}::{key}::{'' if value is None else value}")
            report = h.get("load_report")  # a service reading load reports: the latest, its age, its fields
            if report is not None:
                for key, value in report.items():
                    if key != "named":
                        lines.append(f"{c['name']}::{h['address']}::load_report_{key}::{value}")
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "address"):  # an Endpoint
        return value.address
    return str(value)


def config_dump(mesh: "Mesh") -> dict[str, Any]:
    """The effective configuration, every secret redacted."""
    return redact_mapping(_plain(mesh.config), _extra_secrets(mesh))  # type: ignore[no-any-return]


def ready(mesh: "Mesh") -> bool:
    """Whether discovery produced a first snapshot for every declared service."""
    for name in mesh.config.services:
        try:
            if not mesh.cluster(name).snapshot.source:
                return False
        except MeshError:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    server_version = "meshlib-admin"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("meshlib admin: " + format, *args)

    def _send(self, status: int, body: str, ctype: str = "text/plain; charset=utf-8", extra: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, data: Any) -> None:
        self._send(200, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", "application/json")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        mesh = self.server.mesh
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path.rstrip("/") or "/"
        try:
            if path == "/stats/prometheus" or (path == "/stats" and query.get("format") == ["prometheus"]):
                body, ctype = prometheus_text(mesh)
                self._send(200, body, ctype)
            elif path == "/stats":
                self._json(redact_mapping(mesh.stats(), _extra_secrets(mesh)))
            elif path == "/clusters":
                if query.get("format") == ["json"]:
                    self._json(clusters_json(mesh))
                else:
                    self._send(200, clusters_text(mesh))
            elif path == "/config_dump":
                self._json(config_dump(mesh))
            elif path == "/ready":
                if ready(mesh):
                    self._send(200, "LIVE\n")
                else:
                    self._send(503, "PRE_INITIALIZING\n")
            elif path == "/":
                self._send(200, "meshlib admin: /stats /stats/prometheus /clusters /config_dump /ready\n")
            else:
                self._send(404, f"no such admin path: {path}\n")
        except Exception:
            log.exception("meshlib: admin request %s failed", path)
            self._send(500, "internal error (see the process's log)\n")

    def _not_allowed(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)
        self._send(405, "the admin endpoint is read-only: GET only\n", extra={"Allow": "GET"})
        self.close_connection = True

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mesh: "Mesh"

    def __init__(self, address: tuple[str, int], mesh: "Mesh") -> None:
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        self.mesh = mesh
        super().__init__(address, _Handler)


class AdminServer:
    """The admin endpoint's server and its daemon thread; ``close()`` stops both."""

    def __init__(self, mesh: "Mesh", host: str, port: int) -> None:
        self._server = _Server((host, port), mesh)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="meshlib-admin", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def __repr__(self) -> str:
        return f"<AdminServer {self.url}>"


def admin_url(mesh: "Mesh") -> str | None:
    """The admin endpoint's URL of ``mesh``, or None if it has none."""
    for attached in getattr(mesh, "_attached", ()):
        if isinstance(attached, AdminServer):
            return attached.url
    return None


def fetch_stats(url: str, *, prometheus: bool = False, timeout: float = 5.0) -> str:
    """``meshlib stats --url URL``: a running process's ``/stats`` (JSON) or
    ``/stats/prometheus`` from its admin endpoint."""
    base = url.rstrip("/")
    if base.endswith("/stats"):
        base = base[: -len("/stats")]
    target = base + ("/stats/prometheus" if prometheus else "/stats")
    with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310 (an operator-given admin URL)
        return resp.read().decode("utf-8")  # type: ignore[no-any-return]

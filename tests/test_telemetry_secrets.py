"""Distinctive secrets sent through every client never reach logs, spans,
metrics or the admin endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request

import grpc
import httpx
import requests

import meshlib
from meshlib.admin import admin_url
from tests import otel_setup
from tests.grpc_agents import ECHO, GrpcAgent

SECRETS = {
    "authorization": "Bearer SECRET-AUTH-7f3a9c",
    "proxy-authorization": "Basic SECRET-PROXY-51e0",
    "cookie": "session=SECRET-COOKIE-88d2",
    "x-api-key": "SECRET-APIKEY-c0ffee",
}
URL_PASSWORD = "SECRET-URLPASS-4242"
QUERY_SECRET = "SECRET-QUERY-abcd"
CONSUL_TOKEN = "SECRET-CONSUL-TOKEN-9"
ALL = [*SECRETS.values(), URL_PASSWORD, QUERY_SECRET, CONSUL_TOKEN, "SECRET-SETCOOKIE-77"]


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + json.dumps(getattr(record, "access", {}), default=str))


def test_no_secret_reaches_logs_spans_metrics_or_the_admin_endpoint(agents):
    otel_setup.install()
    web = agents(1)[0]
    web.behaviour.headers = {"Set-Cookie": "id=SECRET-SETCOOKIE-77"}
    rpc = GrpcAgent("secret-grpc")
    handler = Everything()
    root = logging.getLogger("meshlib")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    otel_setup.SPANS.clear()
    cfg = {
        "admin": "127.0.0.1:0",
        "consul_token": CONSUL_TOKEN,
        "redact_headers": "x-api-key",
        "access_log_headers": "authorization,proxy-authorization,cookie,x-api-key,user-agent",
        "access_log_per": "attempt",
        "services": {"web": {"endpoints": web.address}, "rpc": {"endpoints": rpc.address}},
    }
    try:
        with meshlib.Mesh(config=cfg) as mesh:
            url = f"http://user:{URL_PASSWORD}@web/private?token={QUERY_SECRET}"
            mesh.requests_session().get(url, headers=SECRETS)
            mesh.urllib3_pool().request("GET", url, headers=SECRETS)
            with mesh.httpx_client() as c:
                c.get(url, headers=SECRETS)

            async def aio() -> None:
                async with mesh.httpx_async_client() as c:
                    await c.get(url, headers=SECRETS)

            asyncio.run(aio())

            @mesh.call("web")
            def by_hand(ep):
                return requests.get(f"http://{ep.address}/x", headers=meshlib.inject(dict(SECRETS)))

            by_hand()
            metadata = [(k, v) for k, v in SECRETS.items()]
            mesh.grpc_channel("rpc").unary_unary(ECHO)(b"hi", metadata=metadata, timeout=5)
            own = grpc.intercept_channel(grpc.insecure_channel(rpc.address), *mesh.grpc_interceptors("rpc"))
            own.unary_unary(ECHO)(b"hi", metadata=metadata, timeout=5)
            own.close()
            assert web.hits == 5 and rpc.hits == 2
            assert all(h.get("authorization") for h in web.behaviour.seen)  # sent (requests turns URL credentials into Basic auth)

            base = admin_url(mesh)
            outputs = [urllib.request.urlopen(base + path, timeout=5).read().decode() for path in ("/stats", "/stats/prometheus", "/clusters", "/clusters?format=json", "/config_dump")]
            outputs.append(json.dumps(mesh.stats(), default=str))
            outputs.append(repr(mesh.config))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        rpc.server.stop(0)
    spans = otel_setup.SPANS.get_finished_spans()
    assert len(spans) >= 7  # an attempt span per call at least
    outputs.extend(s.to_json() for s in spans)
    logged = "\n".join(handler.lines)
    assert "[redacted]" in logged and "meshlib.access" in logged
    assert "user-agent" in logged  # headers not secret are shown
    outputs.append(logged)
    text = "\n".join(outputs)
    for secret in ALL:
        assert secret not in text, f"{secret} leaked"
    assert "[redacted]" in outputs[4]  # config_dump shows that a token is set, not its value

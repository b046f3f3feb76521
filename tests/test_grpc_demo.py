"""``meshlib demo`` with its gRPC agent pool: real grpcio agents beside the
HTTP ones, judged by the summary a user reads."""

from __future__ import annotations

import io
import re
import threading

from meshlib import cli
from meshlib.demo import run_demo


def test_the_grpc_pool_routes_around_its_failing_and_dead_agents() -> None:
    before = set(threading.enumerate())
    out = io.StringIO()
    result = run_demo(3.5, out=out, live=False, grpc=True)
    text = out.getvalue()
    assert text == result.summary
    http, _, grpc_part = text.partition("gRPC agent pool:")
    assert http.startswith("meshlib demo summary: 5 agents") and grpc_part
    for i in range(1, 6):
        assert f"grpc-agent-{i}" in grpc_part
    calls, ok = map(int, re.search(r"gRPC callers: (\d+) calls, (\d+) ok", grpc_part).groups())  # type: ignore[union-attr]
    assert calls > 50
    assert calls - ok <= max(2, calls // 100)  # UNAVAILABLE and refusals are retried on other agents
    assert re.search(r"grpc-agent-4 \(UNAVAILABLE from t=1\.4s\) answered UNAVAILABLE \d+ times", grpc_part)
    assert re.search(r"grpc-agent-5 \(down from t=\d\.\ds\): \d+ refused connections", grpc_part)
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not [t.name for t in left if t.name.startswith("meshlib")], "meshlib threads left behind"


def test_cli_demo_shows_the_grpc_pool_unless_told_not_to(capsys) -> None:
    assert cli.main(["demo", "--duration", "1.5", "--no-live", "--no-grpc"]) == 0
    assert "gRPC agent pool" not in capsys.readouterr().out

"""``meshlib demo --mtls``: the story runs end to end on 127.0.0.1."""

from __future__ import annotations

import io

from meshlib.cli import main
from meshlib.demo.mtls import run_mtls_demo


def test_the_mtls_demo_rotates_without_failures_and_refuses_the_impostor_and_intruder() -> None:
    out = io.StringIO()
    result = run_mtls_demo(3.0, out=out, live=False, concurrency=2)
    text = out.getvalue()
    assert result.calls > 10 and result.failures == 0
    assert result.serials_after - result.serials_before, "no new connection used the rotated certificate"
    assert "spiffe://example.org/impostor" in result.impostor_error and "spiffe://example.org/billing" in result.impostor_error
    assert result.intruder_status == 403
    assert "spiffe://example.org/planner" in text and "spiffe://example.org/inventory" in text
    assert "PRIVATE KEY" not in text


def test_the_live_view_draws_frames(capsys) -> None:
    out = io.StringIO()
    run_mtls_demo(1.5, out=out, live=True, concurrency=1)
    assert "\x1b[" in out.getvalue() and "meshlib demo --mtls" in out.getvalue()


def test_the_cli_flag(capsys) -> None:
    assert main(["demo", "--mtls", "--duration", "1.5", "--no-live"]) == 0
    assert "calls:" in capsys.readouterr().out

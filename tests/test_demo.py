"""End to end: ``meshlib demo`` (real agents on loopback, a real Mesh, real
client threads) and the other ``meshlib`` subcommands, judged by what a user
sees: the summary's words and numbers, exit codes, and no threads left behind."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlib import cli
from meshlib._table import format_table, table_width
from meshlib.demo import LiveView, run_demo

AGENTS = [f"agent-{i}" for i in range(1, 6)]


@pytest.fixture
def no_leaked_threads():
    """The demo must stop everything it started: no thread it created may outlive it."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not [t.name for t in left if not t.daemon], "non-daemon threads left behind"
    assert not [t.name for t in left if t.name.startswith("meshlib")], "meshlib threads left behind"
    assert not left, f"threads left behind: {[t.name for t in left]}"


def test_run_demo_shows_the_balancer_avoiding_slow_failing_and_dead_agents(no_leaked_threads):
    out = io.StringIO()
    result = run_demo(3.5, out=out, live=False)
    text = out.getvalue()

    assert text == result.summary
    assert "\x1b[" not in text  # --no-live output is plain text
    for name in AGENTS:
        assert name in text
    assert not result.interrupted
    assert result.total_calls > 100
    assert result.ok_calls + sum(result.errors.values()) == result.total_calls

    # While every agent is up, the slow one gets far less traffic than the fast
    # ones. (Later, peak_ewma's random pairs sometimes offer only agent-3 and
    # a failing agent, so its share over the whole run is larger.)
    all_up = result.phases[0]
    fast_shares = [all_up.share(a.name) or 0.0 for a in result.by_role("fast")]
    assert (all_up.share("agent-3") or 0.0) < 0.5 * sum(fast_shares) / len(fast_shares)
    assert result.agent("agent-3").share < max(fast_shares)
    assert "agent-3 (10x slower" in text

    # The failing agent loses its share once it answers 503.
    failing = result.agent("agent-4")
    before, after = result.shares_around("agent-4")
    assert before is not None and after is not None
    assert after < before / 2
    assert f"agent-4 started answering 503 at t={failing.at:.1f}s" in text

    # The dead agent's refused connections were all retried elsewhere: callers saw none.
    down = result.agent("agent-5")
    assert down.at is not None and 1.5 < down.at < 3.0
    assert down.refused > 0
    assert result.retries >= down.refused
    assert result.connection_errors == 0
    assert "callers saw 0 connection errors" in " ".join(text.split())

    # The failing agent's 503s were retried elsewhere (callers saw none), and
    # outlier detection ejected a bad agent. Which one is a race: once the
    # failing agent has answered 503, peak_ewma's failure penalty means it is
    # picked only when paired with the dead agent (whose refused connects carry
    # the same penalty), and whichever of the two first fails three times in a
    # row is ejected; the other then gets no traffic until that one returns,
    # which in a 3.5 s run may be after the end.
    assert failing.failed >= 1
    assert failing.ejections + down.ejections >= 1
    assert not any(kind.startswith("HTTP 5") for kind in result.errors)
    assert "outlier detection ejected it" in " ".join(text.split())

    # Act 2: the breaker opened, refused calls without any reaching the agent, and closed again.
    act = result.breaker
    assert act is not None and act.first("open") is not None and act.first("closed", after=2.0) is not None
    assert act.rejected > 0 and act.agent_hits_while_open == 0
    assert "The breaker (service 'flaky'" in text


def test_cli_demo_prints_a_summary_naming_every_agent(capsys, no_leaked_threads):
    assert cli.main(["demo", "--duration", "3", "--no-live"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("meshlib demo summary: 5 agents, 4 client threads, policy peak_ewma")
    for name in AGENTS:
        assert name in out
    assert "What the balancer did:" in out
    assert "Caller-visible connection errors: 0." in out
    assert err == ""


def test_cli_demo_rejects_an_unknown_policy_with_exit_2(capsys, no_leaked_threads):
    assert cli.main(["demo", "--duration", "1", "--lb-policy", "fastest"]) == 2
    out, err = capsys.readouterr()
    assert "'fastest' is invalid" in err and "peak_ewma" in err
    assert out == ""


def test_live_view_redraws_in_place_on_a_terminal():
    out = io.StringIO()
    view = LiveView(out, "ansi")
    view.show("title", ["head", "row-1", "row-2"], ["footer"], ["up", "down"])
    view.show("title", ["head", "row-1", "row-2"], ["footer"], ["up", "down"])
    view.close()
    first, second = out.getvalue().split("\x1b[J", 1)
    assert "\x1b[5A\r" not in first  # nothing to move over the first time
    assert second.startswith("\x1b[?25l\x1b[5A\r")  # then back up over the 5 lines drawn
    assert "\x1b[31mrow-2" in second  # a down agent's row is red
    assert out.getvalue().endswith("\x1b[?25h")  # the cursor is shown again


def test_cli_endpoints_and_stats_read_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("MESHLIB_SERVICES__INVENTORY__ENDPOINTS", "127.0.0.1:8001;weight=2,127.0.0.1:8002;zone=b")
    assert cli.main(["endpoints", "inventory"]) == 0
    out = capsys.readouterr().out
    assert "service inventory: 2 endpoints (static, version 1)" in out
    assert "127.0.0.1:8001" in out and "127.0.0.1:8002" in out

    assert cli.main(["stats"]) == 0
    out = capsys.readouterr().out
    assert '"inventory"' in out and '"requests": 0' in out

    assert cli.main(["endpoints", "billing"]) == 2
    assert "unknown mesh service 'billing'" in capsys.readouterr().err


def test_cli_reports_a_bad_setting_with_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("MESHLIB_LB_POLICY", "fastest")
    assert cli.main(["stats"]) == 2
    assert "MESHLIB_LB_POLICY='fastest' is invalid" in capsys.readouterr().err


def test_python_dash_m_meshlib_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "meshlib", "demo", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "--lb-policy" in proc.stdout and "--no-live" in proc.stdout


def test_cli_demo_registry_etcd_without_the_binary_says_what_to_do(capsys, monkeypatch):
    monkeypatch.setattr("meshlib.testing.etcd_server.etcd_binary", lambda: None)
    assert cli.main(["demo", "--registry", "etcd", "--duration", "1", "--no-live"]) == 2
    out, err = capsys.readouterr()
    assert "no `etcd` binary" in err and "apt-get install etcd-server" in err and "--registry consul" in err
    assert "Traceback" not in err and "setup.sh" not in err and out == ""


def test_live_view_shows_log_records_inside_the_frame_and_restores_stderr():
    out = io.StringIO()
    stderr = sys.stderr
    view = LiveView(out, "ansi")
    view.show("title", ["head", "row-1"], ["footer"], ["up"])
    logging.getLogger("meshlib").warning("meshlib: agents endpoint 127.0.0.1:1 ejected (outlier detection)")
    print("a stray line on stderr", file=sys.stderr)
    view.show("title", ["head", "row-1"], ["footer"], ["up"])
    logging.getLogger("meshlib").warning("meshlib: late record")
    view.close()
    assert sys.stderr is stderr
    first, second = out.getvalue().split("\x1b[J")[:2]
    assert "ejected" not in first
    # the second frame moves up over the first's 4 lines and draws both records below the footer
    assert second.startswith("\x1b[?25l\x1b[4A\r")
    assert second.index("footer") < second.index("ejected (outlier detection)") < second.index("a stray line on stderr")
    # a record that came after the last frame is printed below it, not lost
    assert out.getvalue().rstrip("\x1b[?25h").endswith("meshlib: late record\n")


def test_live_view_fits_the_terminal_width(monkeypatch):
    from meshlib.demo.table import Row, render_table

    rows = [Row(f"agent-{i}", f"127.0.0.1:{40000 + i}", 12345, 0.25, 0.3, 6.5, 3, 2, 939.1, "failing", "ejected") for i in range(1, 6)]
    wide = render_table(rows, 1.0)
    assert len(wide) == 6 and all("127.0.0.1:" in line for line in wide[1:])
    narrow = render_table(rows, 1.0, width=79)
    assert max(len(line) for line in narrow) <= 79
    head = " ".join(narrow[:2]).split()
    for column in ("agent", "reqs", "share", "p50", "5xx", "refused", "ewma", "state", "meshlib"):
        assert column in head  # only the address went
    assert all(line.split()[-2:] == ["failing", "ejected"] for line in narrow[2:])


def test_mesh_state_is_healthy_only_when_the_latest_attempts_succeeded():
    from meshlib.demo.scenario import mesh_state

    assert mesh_state({"state": "healthy", "consecutive_5xx": 0, "consecutive_local_origin_failure": 0}) == "healthy"
    assert mesh_state({"state": "healthy", "consecutive_local_origin_failure": 2}) == "failing"
    assert mesh_state({"state": "healthy", "consecutive_5xx": 1}) == "failing"
    assert mesh_state({"state": "ejected", "consecutive_5xx": 3}) == "ejected"
    assert mesh_state({}) == "?"


cells = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12)


@given(
    rows=st.lists(st.tuples(cells, cells, cells), max_size=6),
    width=st.integers(min_value=1, max_value=60),
)
def test_format_table_keeps_every_cell_and_drops_only_optional_columns(rows, width):
    headers = ("name", "address", "value")
    lines = format_table(headers, rows, "<<>", width=width, optional=("address",))
    full = format_table(headers, rows, "<<>")
    assert len(lines) == len(full) == len(rows) + 1
    dropped = lines[0].split() == ["name", "value"]
    if table_width(headers, rows) <= width:
        assert lines == full and not dropped
    else:
        assert dropped
    for line, row in zip(lines[1:], rows):
        kept = [row[0], row[2]] if dropped else list(row)
        pos = 0
        for cell in kept:
            found = line.find(cell.strip(), pos)
            assert found >= 0
            pos = found + len(cell.strip())

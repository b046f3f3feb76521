"""``meshlib demo`` in a real terminal: tmux gives it an 80x24 pseudo-terminal,
and the test reads the screen and the scrollback as a user would see them.

Judged: the live frame is drawn once (redraws do not pile up), fits 80
columns, keeps every table column, shows log records inside the frame; the
summary follows in act order with headings; no gRPC core log line leaks; and
nothing wraps at the terminal's edge. Run with ``rich`` (the ``rich`` extra)
and with the plain ANSI fallback (``rich`` made unimportable).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COLS, ROWS = 80, 24

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (scripts/setup.sh installs it)")

#: Runs the command with ``rich`` hidden, to exercise the fallback.
NO_RICH = "import sys; sys.modules['rich'] = None; from meshlib.cli import main; sys.exit(main())"


def _run_in_tmux(tmp_path: Path, argv: list[str], timeout: float = 90.0) -> tuple[str, str]:
    """Run ``argv`` in a COLS x ROWS tmux pane; return (final screen, whole scrollback)."""
    socket = f"meshlib-test-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "exit-status"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHLIB_", "GRPC_", "TMUX"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env["GRPC_VERBOSITY"] = "INFO"  # would print chttp2's "Got goaway" lines, unless the demo silences gRPC core
    script = tmp_path / "run.sh"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.isidentifier())
    script.write_text(
        f"{exports}cd {shlex.quote(str(ROOT))}\n"
        f"{shlex.join(argv)}\n"
        f"echo $? > {shlex.quote(str(done))}\n"
        "sleep 600\n"
    )
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-x", str(COLS), "-y", str(ROWS), f"bash {shlex.quote(str(script))}"], check=True, env=env, timeout=30)
    try:
        subprocess.run([*tmux, "set-option", "-g", "history-limit", "5000"], check=True, timeout=30)
        deadline = time.monotonic() + timeout
        while not done.exists() or not done.read_text().strip():
            assert time.monotonic() < deadline, "the demo did not finish in time"
            time.sleep(0.2)
        assert done.read_text().strip() == "0"
        screen = subprocess.run([*tmux, "capture-pane", "-p"], check=True, capture_output=True, text=True, timeout=30).stdout
        # -J joins lines the terminal wrapped, so a line wider than the pane shows as one long line
        history = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-S", "-"], check=True, capture_output=True, text=True, timeout=30).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=30, capture_output=True)
    return screen, history


@pytest.mark.parametrize("view", ["rich", "ansi"])
def test_demo_at_80x24_draws_one_frame_then_one_summary_in_act_order(tmp_path: Path, view: str) -> None:
    if view == "rich":
        pytest.importorskip("rich")
        argv = [sys.executable, "-m", "meshlib", "demo", "--duration", "4"]
    else:
        argv = [sys.executable, "-c", NO_RICH, "demo", "--duration", "4"]
    screen, history = _run_in_tmux(tmp_path, argv)
    lines = history.rstrip("\n").split("\n")

    # Nothing reached the terminal's edge and wrapped.
    assert max(len(line) for line in lines) <= COLS, [line for line in lines if len(line) > COLS]
    # gRPC core's own log lines never leak.
    assert "chttp2" not in history and "goaway" not in history.lower()

    # One live frame is left on screen: redraws did not pile up titles.
    titles = [i for i, line in enumerate(lines) if line.startswith('meshlib demo: service "agents"')]
    assert len(titles) == 1, titles
    frame = lines[titles[0] :]
    header = next(line for line in frame if line.startswith("agent "))
    for column in ("reqs", "share", "5xx", "refused", "state", "meshlib"):
        assert column in header.split(), header
    for i in range(1, 6):
        assert any(line.startswith(f"agent-{i} ") for line in frame)
    # The outlier detector's warnings are shown inside the frame, not drawn over.
    assert any(line.startswith("meshlib: agents endpoint") and "ejected (outlier detection)" in line for line in frame)
    down = next(line for line in frame if line.startswith("  grpc-agent-5 "))
    assert "down" in down.split() and "meshlib: healthy" not in down  # a dead gRPC agent is not shown healthy

    # Then one summary, in act order, with headings.
    order = [
        "meshlib demo summary: 5 agents, 4 client threads, policy peak_ewma",
        "Act 1: HTTP agents behind service",
        "What the balancer did:",
        "Act 1, gRPC agent pool:",
        "Act 2: a circuit breaker",
        "The breaker (service 'flaky'",
    ]
    at = [next(i for i, line in enumerate(lines) if line.startswith(text)) for text in order]
    assert at == sorted(at) and at[0] > titles[0], list(zip(order, at))
    assert sum(line.startswith("meshlib demo summary:") for line in lines) == 1
    # The progress line of act 2 was erased; only the summary's heading remains.
    assert not any("(3 s)..." in line for line in lines)

    # The final screen is the end of the summary.
    visible = [line for line in screen.rstrip("\n").split("\n") if line.strip()]
    assert visible[-1].startswith("  - callers:") or "refused fast" in visible[-1], visible[-3:]

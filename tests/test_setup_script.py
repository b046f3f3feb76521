"""scripts/setup.sh works with Debian's own Python: it builds a virtual
environment (no pip into the externally-managed system Python), installs
meshlib into it, and a second run is a fast no-op. The venv goes to a
temporary directory (VENV=...), with no extras, to keep this to seconds."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")

pytestmark = pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="needs Debian's /usr/bin/python3")


def _setup(venv: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHLIB_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))}
    env.update(PYTHON=str(DEBIAN_PYTHON), VENV=str(venv), EXTRAS="")
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=env, capture_output=True, text=True, timeout=540)


def test_setup_builds_a_venv_from_debians_python_and_the_readme_commands_work(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    first = _setup(venv)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "creating the virtual environment" in first.stdout
    assert (venv / "bin" / "python").exists()

    # The venv's meshlib is this checkout, and the installed command runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHLIB_", "PYTHONPATH"))}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import meshlib, sys; print(meshlib.__file__); print(sys.prefix)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert where.returncode == 0, where.stderr
    module, prefix = where.stdout.split()
    assert module.startswith(str(ROOT.resolve()) + "/") and Path(prefix) == venv
    env["MESHLIB_SERVICES__INVENTORY__ENDPOINTS"] = "127.0.0.1:8001,127.0.0.1:8002;weight=2"
    cmd = subprocess.run([str(venv / "bin" / "meshlib"), "endpoints", "inventory"], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert cmd.returncode == 0, cmd.stderr
    assert "service inventory: 2 endpoints" in cmd.stdout
    assert any(line.startswith("127.0.0.1:8002") and " 2 " in line for line in cmd.stdout.splitlines()), cmd.stdout

    # Nothing changed: the second run reinstalls nothing and takes well under a few seconds.
    started = time.monotonic()
    again = _setup(venv)
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stdout and "creating" not in again.stdout, again.stdout
    assert time.monotonic() - started < 10

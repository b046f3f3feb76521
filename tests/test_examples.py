"""Every script in examples/ runs to completion and prints what the docs say it prints.

The examples start their own servers on 127.0.0.1 and check their own claims
with asserts, so exit code 0 already means the behaviour held. They run as
subprocesses (a few at a time, to keep this file fast), with any MESHLIB_*
variables of the test environment removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
#: The runnable scripts; ``_agents.py`` and ``_flaky.py`` (the servers they share) are modules, not examples.
EXAMPLES = sorted(p.name for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))
TIMEOUT = 60.0

#: Text each example must print (besides exiting 0).
EXPECTED: dict[str, list[str]] = {
    "quickstart_requests.py": [
        "GET http://inventory/items?sku=42 -> inventory-",
        "(Host header: inventory)",
        "GET http://inventory:9999/items -> inventory-",
        "(pass-through)",
        "EndpointSnapshot('inventory', v1,",
    ],
    "http_clients.py": [
        "requests: 200 from catalog-",
        "url=http://catalog/books, Host=catalog",
        "urllib3:  200 from catalog-",
        "Host=catalog:8080",
        "httpx:    200 from catalog-",
        "httpx:    503 from catalog-",
        "connect retries made:",
    ],
    "httpx_async.py": ["GET http://search/q?term=mesh -> 200 from", "search-slow:", "of 60 calls"],
    "file_discovery.py": [
        "v1: EndpointSnapshot('orders', v1,",
        "answered by ['backend-A']",
        "v2: EndpointSnapshot('orders', v2,",
        "answered by ['backend-B']",
        "reloads=1, errors=1",
        "still answered by ['backend-B']",
    ],
    "dns_discovery.py": ["resolved: EndpointSnapshot('inventory', v1,", "-> inventory-on-localhost", "snapshot version=1"],
    "ring_hash_affinity.py": [
        "ring_hash: every user always on the same backend",
        "maglev: every user always on the same backend",
        "0 users of profile-1/2 moved",
    ],
    "priority_failover.py": [
        "planned: P0 100%, P1 0%",
        "planned: P0 70%, P1 30%",
        "planned: P0 35%, P1 65%",
        "planned: P0 100% (panic)",
        "calls went to all of ['p0-1', 'p0-2', 'p0-3', 'p0-4']",
    ],
    "locality_weights.py": ["all healthy", "a-2 unhealthy", "zone c  0.0%"],
    "load_balancing_policies.py": [
        "round_robin                      20           20         20",
        "weighted_round_robin             30           15         15",
        "peak_ewma",
        "maglev",
    ],
    "decorator_async.py": ["12 concurrent calls answered by:", "is not retried: bad input"],
    "mtls.py": [
        "GET http://inventory/stock over mTLS: the server saw spiffe://example.org/planner",
        "rotated without a restart: serial ",
        "impostor refused: True",
    ],
    "grpc_channels.py": [
        "30 calls answered by: {'greeter-1': 15, 'greeter-2': 15}",
        "a stream stays on one endpoint: ['greeter-",
        "with meshlib.deadline(0.5): greeter-",
        "grpc.aio, 6 concurrent calls: ['greeter-1', 'greeter-2']",
        "own channel + interceptors: greeter-1 greets dee",
        "interceptor stats: attempts=1 successes=1",
    ],
    "decorator_sync.py": ["HELLO 0", "default mesh: <Mesh services=['shouter']", "shouter-1: ONLY SHOUTER-1 IS IN THIS MESH"],
    "retries_and_budget.py": [
        "6 GETs: [200, 200, 200, 200, 200, 200]; retries:",
        "the 503 may have done its work: returned, not retried",
        "(connect-failure is retried for any method)",
        "a 503 with Retry-After: 2 was retried after exactly 2.0s",
        "retry_budget=none   400 attempts (4.00 per call)",
        "retry_budget=ratio  140 attempts (1.40 per call)",
        "floor x (elapsed + ttl) = 140",
    ],
    "outlier_and_breaker.py": [
        "9 calls while catalog-a answers 503:",
        "(ejected)",
        "catalog-a: state=ejected, times_ejected=1, reason=consecutive_5xx",
        "catalog-a got none",
        "events: [('eject', 'consecutive_5xx'), ('uneject', 'ejection_time_elapsed')]",
        "(unhealthy)",
        "6 calls answered by ['search-well']",
        "search-sick recovers: health_check=passing",
        "-> breaker open",
        "next call: CircuitOpenError: circuit open for 'ledger'",
        "probe 1: 200 -> breaker half_open",
        "probe 2: 200 -> breaker closed",
    ],
    "deadlines_and_hedging.py": [
        "caller gave 1000 ms -> frontend received",
        "backend hangs: frontend answered 504 after",
        "exceeded its deadline of",
        "backend deadline_exceeded: 1",
        "GET  http://search/q -> search-fast in",
        "(not hedged)",
        "async (httpx): answered by ['search-fast', 'search-fast']",
    ],
    "registries.py": [
        "etcd at etcd://127.0.0.1:",
        "Consul (API double) at consul://127.0.0.1:",
        "all summarizers: ['large', 'small']",
        "with tag gpu:    ['large']",
        "caller (model=large) answered by ['summarizer-large']",
        "after agent B left: ['small']",
        "registry status: kind=consul connected=True stale_seconds=0.0",
    ],
}


def _run(name: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLIB_")}
    # The examples import examples/_agents.py from the script's own directory,
    # which PYTHONSAFEPATH (python -P) would leave off sys.path.
    env.pop("PYTHONSAFEPATH", None)
    return subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / name)],
        cwd=EXAMPLES_DIR.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def results() -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(EXAMPLES, pool.map(_run, EXAMPLES)))


def test_every_example_has_expectations() -> None:
    assert EXAMPLES, "no examples found"
    assert sorted(EXPECTED) == EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name: str, results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = results[name]
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    for text in EXPECTED.get(name, []):
        assert text in proc.stdout, f"{name} did not print {text!r}\n--- stdout\n{proc.stdout}"
    assert "Traceback" not in proc.stderr, proc.stderr

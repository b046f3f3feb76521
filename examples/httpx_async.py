"""httpx.AsyncClient through the mesh: concurrent calls balanced by least_request.

Three backends, one of them slow (80 ms per answer). Six concurrent workers
make ten calls each; least_request compares the number of calls in flight,
so the slow backend, which holds its calls longer, is picked less often.

    python examples/httpx_async.py
"""

from __future__ import annotations

import asyncio
import collections

import meshlib

from _agents import Backend  # tiny local servers: examples/_agents.py


async def run(mesh: meshlib.Mesh) -> collections.Counter:
    async with mesh.httpx_async_client(timeout=5.0) as client:
        first = await client.get("http://search/q?term=mesh")
        print(f"GET {first.url} -> {first.status_code} from {first.json()['backend']}")

        counts: collections.Counter = collections.Counter()

        async def worker(w: int) -> None:
            for i in range(10):
                r = await client.get(f"http://search/q?term={w}-{i}")
                r.raise_for_status()
                counts[r.json()["backend"]] += 1

        await asyncio.gather(*(worker(w) for w in range(6)))
        return counts


def main() -> None:
    backends = [Backend("search-fast-1"), Backend("search-fast-2"), Backend("search-slow", delay=0.08)]
    config = {"lb_policy": "least_request", "services": {"search": {"endpoints": [b.address for b in backends]}}}
    try:
        with meshlib.Mesh(config=config) as mesh:
            counts = asyncio.run(run(mesh))
            for name in sorted(counts):
                print(f"{name}: {counts[name]} of 60 calls")
            assert sum(counts.values()) == 60
            assert counts["search-slow"] < max(counts["search-fast-1"], counts["search-fast-2"]), counts
            for ep in mesh.stats()["services"]["search"]["endpoints"]:
                print(f"  {ep['address']}: active={ep['active']} requests={ep['requests']} mean={ep['mean_latency_ms']} ms")
    finally:
        for b in backends:
            b.stop()


if __name__ == "__main__":
    main()

"""``@mesh.call`` on an async function: an Endpoint per attempt, any protocol.

The service ``embedder`` has two live HTTP backends and one endpoint whose
port is closed. The decorated coroutine speaks HTTP/1.0 over asyncio streams
itself; meshlib picks the endpoint, retries refused connections on another
endpoint, and feeds each attempt's latency and outcome to the balancer. An
exception raised by the function for any other reason goes straight back to
the caller.

    python examples/decorator_async.py
"""

from __future__ import annotations

import asyncio
import collections
import json

import meshlib

from _agents import Backend, closed_port  # tiny local servers: examples/_agents.py


async def main_async(mesh: meshlib.Mesh) -> None:
    attempts: list[str] = []

    @mesh.call("embedder")
    async def embed(endpoint: meshlib.Endpoint, text: str) -> dict:
        attempts.append(endpoint.address)
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        try:
            writer.write(f"GET /embed?text={text} HTTP/1.0\r\nHost: embedder\r\n\r\n".encode())
            raw = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200"):
            raise RuntimeError(head.split(b"\r\n")[0].decode())
        return json.loads(body)

    results = await asyncio.gather(*(embed(f"doc{i}") for i in range(12)))
    counts = collections.Counter(r["backend"] for r in results)
    print(f"12 concurrent calls answered by: {dict(sorted(counts.items()))}")
    print(f"attempts made: {len(attempts)} (refused connections were retried on another endpoint)")
    assert len(results) == 12 and set(counts) <= {"embedder-1", "embedder-2"}

    @mesh.call("embedder")
    async def reject(endpoint: meshlib.Endpoint) -> None:
        raise ValueError("bad input")  # not a connect failure: returned to the caller, no retry

    try:
        await reject()
    except ValueError as exc:
        print(f"ValueError from the function itself is not retried: {exc}")


def main() -> None:
    backends = [Backend("embedder-1"), Backend("embedder-2")]
    dead = f"127.0.0.1:{closed_port()}"
    config = {"lb_policy": "random", "services": {"embedder": {"endpoints": [backends[0].address, backends[1].address, dead]}}}
    try:
        with meshlib.Mesh(config=config) as mesh:
            asyncio.run(main_async(mesh))
            for ep in mesh.stats()["services"]["embedder"]["endpoints"]:
                print(f"  {ep['address']}: requests={ep['requests']} successes={ep['successes']} "
                      f"failures={ep['failures']} connect_failures={ep['connect_failures']}")
    finally:
        for b in backends:
            b.stop()


if __name__ == "__main__":
    main()

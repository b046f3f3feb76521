"""Consul and etcd: agents register themselves; another mesh finds them by capability.

Runs the same story on a real etcd (the ``etcd`` binary, on free 127.0.0.1
ports) and on meshlib's Consul API double:

1. two summarizer agents register, each with its model in ``meta`` and one
   with the ``gpu`` tag;
2. a caller's mesh asks for "a summarizer that speaks model large" and calls it;
3. one agent leaves; the caller's mesh drops it at once.

    python examples/registries.py
"""

from __future__ import annotations

import time

import meshlib
from meshlib.testing.consul_double import ConsulDouble
from meshlib.testing.etcd_server import EtcdServer

from _agents import Backend  # tiny local servers: examples/_agents.py


def wait_until(predicate, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("the mesh did not catch up")
        time.sleep(0.005)
    return time.monotonic() - start


def story(registry_url: str) -> None:
    small, large = Backend("summarizer-small", keep_alive=True), Backend("summarizer-large", keep_alive=True)
    config = {"discovery": registry_url, "registry_ttl": "5s"}
    try:
        with meshlib.Mesh(config=config) as agent_a, meshlib.Mesh(config=config) as agent_b:
            # Each agent registers itself (in real life: one process each).
            agent_a.register("summarizer", port=int(small.address.split(":")[1]), address="127.0.0.1", meta={"model": "small"})
            leaving = agent_b.register("summarizer", port=int(large.address.split(":")[1]), address="127.0.0.1", tags=["gpu"], meta={"model": "large"})

            # The caller routes "summarizer" only to instances with model=large.
            caller_config = {**config, "services": {"summarizer": {"filter_meta": "model=large"}}}
            with meshlib.Mesh(config=config) as everyone, meshlib.Mesh(config=caller_config) as caller:
                wait_until(lambda: len(everyone.endpoints("summarizer")) == 2)
                print("  all summarizers:", sorted(ep.metadata["model"] for ep in everyone.endpoints("summarizer")))
                print("  with tag gpu:   ", [ep.metadata["model"] for ep in everyone.endpoints("summarizer", tags=["gpu"])])
                wait_until(lambda: len(caller.endpoints("summarizer")) == 1)
                with caller.requests_session() as session:
                    answers = {session.get("http://summarizer/summarize").json()["backend"] for _ in range(4)}
                print("  caller (model=large) answered by", sorted(answers))
                assert answers == {"summarizer-large"}

                leaving.close()  # agent B leaves: deregistered at once
                took = wait_until(lambda: len(everyone.endpoints("summarizer")) == 1)
                print(f"  after agent B left: {sorted(ep.metadata['model'] for ep in everyone.endpoints('summarizer'))} (seen in {took * 1000:.0f} ms)")
                status = everyone.stats()["discovery"][0]
                print(f"  registry status: kind={status['kind']} connected={status['connected']} stale_seconds={status['stale_seconds']}")
    finally:
        small.stop()
        large.stop()


def main() -> None:
    with EtcdServer() as etcd:
        print(f"etcd at {etcd.url}")
        story(etcd.url)
    with ConsulDouble() as consul:
        print(f"Consul (API double) at {consul.url}")
        story(consul.url)


if __name__ == "__main__":
    main()

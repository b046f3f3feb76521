"""The same mesh service through requests, urllib3 and httpx, with one dead endpoint.

The service ``catalog`` has two live endpoints and one whose port is closed.
Connection attempts to the closed port are refused; the default retry policy
(``retry_on: connect-failure,refused-stream``, ``num_retries: 2``) retries
those calls on another endpoint, so every call succeeds. A 503 answer, by
contrast, is returned to the caller as is (``retry_on`` does not name ``5xx``
by default). After five refusals in a row, outlier detection ejects the dead
endpoint.

    python examples/http_clients.py
"""

from __future__ import annotations

import httpx

import meshlib

from _agents import Backend, closed_port  # tiny local servers: examples/_agents.py


def main() -> None:
    backends = [Backend("catalog-1"), Backend("catalog-2")]
    dead = f"127.0.0.1:{closed_port()}"
    config = {
        "lb_policy": "round_robin",
        "connect_timeout": "1s",
        "services": {"catalog": {"endpoints": [backends[0].address, dead, backends[1].address]}},
    }
    try:
        with meshlib.Mesh(config=config) as mesh:
            with mesh.requests_session() as session:
                for _ in range(3):
                    r = session.get("http://catalog/books")
                    print(f"requests: {r.status_code} from {r.json()['backend']}, url={r.url}, Host={r.json()['host']}")
                    assert r.status_code == 200

            pool = mesh.urllib3_pool()
            for _ in range(3):
                r = pool.request("GET", "http://catalog:8080/books")
                print(f"urllib3:  {r.status} from {r.json()['backend']}, Host={r.json()['host']}")
                assert r.status == 200
            pool.clear()

            with mesh.httpx_client() as client:
                for _ in range(3):
                    r = client.get("http://catalog/books")
                    print(f"httpx:    {r.status_code} from {r.json()['backend']}, url={r.url}, Host={r.json()['host']}")
                    assert r.status_code == 200

                # A 5xx answer is a response, not a connect failure: no retry.
                r = client.get("http://catalog/unavailable")
                print(f"httpx:    {r.status_code} from {r.json()['backend']} (returned to the caller, not retried)")
                assert r.status_code == 503

            stats = mesh.stats()["services"]["catalog"]
            print(f"connect retries made: {stats['retries']}")
            for ep in stats["endpoints"]:
                print(
                    f"  {ep['address']}: requests={ep['requests']} successes={ep['successes']} "
                    f"failures={ep['failures']} connect_failures={ep['connect_failures']}"
                )
            assert stats["retries"] >= 1
    finally:
        for b in backends:
            b.stop()


if __name__ == "__main__":
    main()

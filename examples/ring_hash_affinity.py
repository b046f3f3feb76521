"""Session affinity with ring_hash (and maglev): one user, one backend.

Three backends serve the service ``profile``. The hash key is the
``x-user-id`` header (HASH_HEADER), or set in code with ``meshlib.hash_key``.
Every call for the same user lands on the same backend. When one backend
leaves, the users it served move; with ring_hash everyone else stays put
(maglev may move a few others too).

    python examples/ring_hash_affinity.py
"""

from __future__ import annotations

import meshlib

from _agents import Backend  # tiny local servers: examples/_agents.py


USERS = [f"user-{i}" for i in range(30)]


def placement(policy: str, backends: list[Backend]) -> dict[str, str]:
    """Which backend answers each user, calling each user three times."""
    config = {
        "lb_policy": policy,
        "hash_header": "x-user-id",
        "services": {"profile": {"endpoints": [b.address for b in backends]}},
    }
    out = {}
    with meshlib.Mesh(config=config) as mesh, mesh.requests_session() as session:
        for user in USERS:
            seen = {session.get("http://profile/me", headers={"X-User-Id": user}).json()["backend"] for _ in range(3)}
            assert len(seen) == 1, f"{user} was served by {seen}"
            out[user] = seen.pop()
        # The same, with the key given in code rather than in a header.
        with meshlib.hash_key("user-7"):
            via_code = session.get("http://profile/me").json()["backend"]
        assert via_code == out["user-7"]
    return out


def main() -> None:
    backends = [Backend("profile-1"), Backend("profile-2"), Backend("profile-3")]
    try:
        for policy in ("ring_hash", "maglev"):
            before = placement(policy, backends)
            counts = {b.name: sum(1 for v in before.values() if v == b.name) for b in backends}
            print(f"{policy}: every user always on the same backend; users per backend: {counts}")
            print(f"  user-7 -> {before['user-7']} (header x-user-id or meshlib.hash_key)")

            after = placement(policy, backends[:2])  # profile-3 leaves
            moved = [u for u in USERS if before[u] != after[u]]
            others = [u for u in moved if before[u] != "profile-3"]
            print(f"  profile-3 removed: {len(moved) - len(others)} of its {counts['profile-3']} users moved, "
                  f"{len(others)} users of profile-1/2 moved")
            assert all(after[u] != "profile-3" for u in USERS)
            if policy == "ring_hash":
                # The other hosts keep their ring entries: only profile-3's users move.
                # (maglev rebuilds its table and may, rarely, move a few others too.)
                assert not others, others
    finally:
        for b in backends:
            b.stop()


if __name__ == "__main__":
    main()

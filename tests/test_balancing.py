"""Balancer behaviour over many picks: shares, load awareness, consistency, priorities."""

from __future__ import annotations

import bisect
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib import Endpoint, EndpointSnapshot, ManualClock, NoHealthyEndpointsError
from meshlib.balancing.hashing import hash_key
from meshlib.balancing.locality import plan_levels
from meshlib.balancing.weighted_round_robin import schedule
from meshlib.core.cluster import Cluster
from meshlib.config import load_config


def make_cluster(policy: str, endpoints, clock=None, seed: int = 7, **keys) -> Cluster:
    cfg = load_config(environ={}, overrides={"lb_policy": policy, **keys}).service("svc")
    cluster = Cluster("svc", cfg, clock=clock or ManualClock(), rng=random.Random(seed))
    cluster.update(EndpointSnapshot("svc", tuple(endpoints)))
    return cluster


def eps(n: int, **kw) -> list[Endpoint]:
    return [Endpoint("10.0.0.%d" % (i + 1), 8080, **kw) for i in range(n)]


def shares(cluster: Cluster, picks: int, hash_fn=None) -> Counter:
    c: Counter = Counter()
    for i in range(picks):
        c[cluster.pick(hash_fn(i) if hash_fn else None).endpoint.host] += 1
    return c


def test_round_robin_is_exactly_even():
    cluster = make_cluster("round_robin", eps(7))
    counts = shares(cluster, 7 * 1000)
    assert set(counts.values()) == {1000}


def test_round_robin_visits_every_host_each_cycle():
    cluster = make_cluster("round_robin", eps(5))
    for _ in range(20):
        cycle = {cluster.pick(None).endpoint.host for _ in range(5)}
        assert len(cycle) == 5


@pytest.mark.parametrize("weights", [[1, 2, 3, 4], [5, 1], [100, 1, 1], [7, 7, 14]])
def test_weighted_round_robin_honours_weights(weights):
    endpoints = [Endpoint(f"10.0.0.{i + 1}", 80, weight=w) for i, w in enumerate(weights)]
    cluster = make_cluster("weighted_round_robin", endpoints)
    picks = 10_000
    counts = shares(cluster, picks)
    total = sum(weights)
    for ep in endpoints:
        assert abs(counts[ep.host] / picks - ep.weight / total) < 0.02
    # Exactly proportional over whole cycles.
    cycle = sum(weights)
    counts = shares(cluster, cycle * 50)
    assert [counts[ep.host] for ep in endpoints] == [w * 50 for w in weights]


def test_weighted_round_robin_is_smooth():
    order = schedule([5, 1, 1])
    # The light hosts fall between the heavy one's turns, not bunched at the end.
    assert order.index(1) < 4 and order.index(2) < 5
    run = longest = 0
    for i in order:
        run = run + 1 if i == 0 else 0
        longest = max(longest, run)
    assert longest <= 3


def test_random_weighted_shares():
    endpoints = [Endpoint("10.0.0.1", 80, weight=1), Endpoint("10.0.0.2", 80, weight=3)]
    counts = shares(make_cluster("random", endpoints), 20_000)
    assert abs(counts["10.0.0.2"] / 20_000 - 0.75) < 0.02


def test_least_request_avoids_busy_hosts():
    cluster = make_cluster("least_request", eps(4))
    busy = cluster.hosts[0]
    for _ in range(50):
        busy.start()  # 50 requests in flight on host 1
    counts = shares(cluster, 8000)
    # P2C with replacement: the busy host wins only when drawn twice (1/16).
    assert counts["10.0.0.1"] / 8000 < 0.08
    assert all(abs(counts[h] / 8000 - 0.31) < 0.04 for h in ("10.0.0.2", "10.0.0.3", "10.0.0.4"))


def test_least_request_weighted_idle_shares_follow_weights_and_load_shifts_them():
    endpoints = [Endpoint("10.0.0.1", 80, weight=1), Endpoint("10.0.0.2", 80, weight=3)]
    cluster = make_cluster("least_request", endpoints)
    counts = shares(cluster, 20_000)
    assert abs(counts["10.0.0.2"] / 20_000 - 0.75) < 0.02
    heavy = cluster.hosts[1]
    for _ in range(8):
        heavy.start()  # effective weight 3 / 9 < 1 / 1
    counts = shares(cluster, 20_000)
    # Whenever the light host is among the candidates it now wins: 1 - 0.75^2.
    assert abs(counts["10.0.0.1"] / 20_000 - 0.4375) < 0.02


def _feed(cluster: Cluster, latency_of, clock: ManualClock, calls: int) -> Counter:
    counts: Counter = Counter()
    for _ in range(calls):
        host = cluster.pick(None)
        host.start()
        lat = latency_of(host.endpoint.host)
        clock.advance(lat)
        host.done(lat, "success")
        counts[host.endpoint.host] += 1
    return counts


def test_peak_ewma_starves_a_ten_times_slower_host():
    clock = ManualClock()
    cluster = make_cluster("peak_ewma", eps(4), clock=clock)
    counts = _feed(cluster, lambda h: 0.050 if h == "10.0.0.4" else 0.005, clock, 4000)
    assert counts["10.0.0.4"] / 4000 < 0.10


def test_peak_ewma_reacts_to_a_latency_spike_then_recovers():
    clock = ManualClock()
    cluster = make_cluster("peak_ewma", eps(3), clock=clock)
    jitter = random.Random(3)

    def normal(h: str) -> float:
        return 0.005 * jitter.uniform(0.8, 1.2)

    _feed(cluster, normal, clock, 300)
    spike = _feed(cluster, lambda h: 0.2 if h == "10.0.0.1" else normal(h), clock, 600)
    assert spike["10.0.0.1"] < 40  # the peak is adopted at once
    clock.advance(60)  # six decay times idle: the slow memory fades
    after = _feed(cluster, normal, clock, 600)
    assert after["10.0.0.1"] > 100  # back in rotation


def test_peak_ewma_penalises_failures():
    clock = ManualClock()
    cluster = make_cluster("peak_ewma", eps(4), clock=clock)
    counts: Counter = Counter()
    for _ in range(2000):
        host = cluster.pick(None)
        host.start()
        clock.advance(0.005)
        host.done(0.001, "failure" if host.endpoint.host == "10.0.0.2" else "success")
        counts[host.endpoint.host] += 1
    assert counts["10.0.0.2"] / 2000 < 0.05


# ---------------------------------------------------------------- consistent hashing


def owners(cluster: Cluster, keys) -> dict:
    return {k: cluster.pick(hash_key(k)).endpoint.host for k in keys}


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_same_key_same_host_and_spread(policy):
    cluster = make_cluster(policy, eps(5))
    keys = [f"user-{i}" for i in range(5000)]
    first = owners(cluster, keys)
    assert owners(cluster, keys) == first
    counts = Counter(first.values())
    assert len(counts) == 5 and min(counts.values()) > 5000 / 5 * 0.5


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_hash_policies_without_key_spread_randomly(policy):
    counts = shares(make_cluster(policy, eps(4)), 4000)
    assert len(counts) == 4


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=3, max_value=30), gone=st.integers(min_value=0, max_value=29), policy=st.sampled_from(["ring_hash", "maglev"]))
def test_removing_one_host_moves_about_one_nth_of_keys(n, gone, policy):
    gone %= n
    endpoints = eps(n)
    before = make_cluster(policy, endpoints)
    after = make_cluster(policy, endpoints[:gone] + endpoints[gone + 1 :])
    keys = [f"k{i}" for i in range(3000)]
    b, a = owners(before, keys), owners(after, keys)
    removed = endpoints[gone].host
    moved = [k for k in keys if b[k] != a[k]]
    others_moved = sum(1 for k in moved if b[k] != removed) / len(keys)
    if policy == "maglev":
        assert others_moved <= 0.03  # Maglev's "minimal disruption"
    else:
        assert others_moved == 0.0  # the ring only lost the removed host's entries
    # About 1/N of the keys move in total.
    assert len(moved) / len(keys) <= 1.0 / n * 1.5 + 0.03


def test_ring_size_follows_envoy_bounds():
    from meshlib.balancing.ring_hash import build_ring

    hashes, _ = build_ring(["a:1", "b:1", "c:1"], [1, 1, 1], 1024, 8388608)
    assert len(hashes) == 3 * 512
    hashes, _ = build_ring(["a:1"], [1], 1024, 8388608)
    assert len(hashes) == 1024
    hashes, _ = build_ring([f"h{i}:1" for i in range(10_000)], [1] * 10_000, 1024, 8388608)
    assert 10_000 <= len(hashes) <= 1 << 16
    hashes, owners_ = build_ring(["a:1", "b:1"], [1, 3], 1024, 8388608)
    c = Counter(owners_)
    assert abs(c[1] / c[0] - 3) < 0.05
    hashes, _ = build_ring(["a:1", "b:1"], [1, 1], 1024, 100)
    assert len(hashes) == 100


def test_a_ring_over_its_size_limit_shares_it_by_weight():
    from meshlib.balancing.ring_hash import build_ring

    # Weight 10,000 does not fit a 4,096-entry ring: each host gets its share
    # of the 4,096, not one entry per unit cut at the smallest hashes.
    hashes, owners_ = build_ring([f"h{i}:1" for i in range(10)], [1000] * 10, 1024, 4096)
    assert len(hashes) == 4096
    assert set(Counter(owners_).values()) == {409, 410}
    keys = [hash_key(f"user-{i}") for i in range(20_000)]
    arcs = Counter(owners_[bisect.bisect_left(hashes, k) % len(hashes)] for k in keys)
    assert max(arcs.values()) < 0.25 * len(keys)  # before the fix one host got 64%


def test_maglev_weights_share_the_table():
    from meshlib.balancing.maglev import build_table

    table = build_table(["a:1", "b:1", "c:1"], [1, 2, 1], 65537)
    c = Counter(table)
    assert abs(c[1] / 65537 - 0.5) < 0.01 and abs(c[0] / 65537 - 0.25) < 0.01


def test_hash_header_and_explicit_key_pick_consistently():
    import meshlib

    cluster = make_cluster("ring_hash", eps(6), hash_header="x-user")
    assert cluster.hashing
    with meshlib.hash_key("alice"):
        call = cluster.start_call()
        h1 = call.pick()
    call2 = cluster.start_call("alice")  # the same key from a header
    assert call2.pick() is h1


# ---------------------------------------------------------------- priority and locality


def test_plan_levels_matches_envoy_examples():
    # Envoy docs: P0 healthy 100% -> all traffic to P0.
    lv = plan_levels([(0, 10, 10), (1, 10, 10)], 1.4, 50)
    assert [l.load for l in lv] == [100, 0]
    # P0 at 50% healthy -> health 70% -> 70/30 split.
    lv = plan_levels([(0, 10, 5), (1, 10, 10)], 1.4, 50)
    assert [round(l.load) for l in lv] == [70, 30]
    # P0 at 20% (28), P1 at 20% (28): total 56 < 100 -> normalized 50/50, both below panic.
    lv = plan_levels([(0, 10, 2), (1, 10, 2)], 1.4, 50)
    assert [round(l.load) for l in lv] == [50, 50] and all(l.panic for l in lv)
    # Nothing healthy: everything to P0 in panic.
    lv = plan_levels([(0, 4, 0), (1, 4, 0)], 1.4, 50)
    assert [l.load for l in lv] == [100, 0] and lv[0].panic


def test_priority_failover_spills_gradually():
    p0 = [Endpoint(f"10.0.0.{i}", 80, priority=0, healthy=i > 5) for i in range(1, 11)]  # 5 of 10 healthy
    p1 = [Endpoint(f"10.0.1.{i}", 80, priority=1) for i in range(1, 11)]
    counts = shares(make_cluster("round_robin", p0 + p1), 20_000)
    to_p0 = sum(v for h, v in counts.items() if h.startswith("10.0.0."))
    assert abs(to_p0 / 20_000 - 0.70) < 0.02
    assert not any(h in counts for h in ("10.0.0.1", "10.0.0.5"))  # unhealthy hosts get nothing


def test_panic_mode_uses_unhealthy_hosts_and_threshold_zero_fails():
    endpoints = [Endpoint(f"10.0.0.{i}", 80, healthy=i == 1) for i in range(1, 5)]  # 25% healthy
    counts = shares(make_cluster("round_robin", endpoints), 4000)
    assert set(counts.values()) == {1000}  # panic: all four share equally
    calm = shares(make_cluster("round_robin", endpoints, panic_threshold=20), 4000)
    assert dict(calm) == {"10.0.0.1": 4000}
    none = make_cluster("round_robin", [Endpoint("10.0.0.1", 80, healthy=False)], panic_threshold=0)
    with pytest.raises(NoHealthyEndpointsError, match="svc"):
        none.pick(None)


def test_locality_weights_scale_with_zone_health():
    a = [Endpoint(f"10.0.0.{i}", 80, zone="a") for i in range(1, 5)]
    b = [Endpoint(f"10.0.1.{i}", 80, zone="b", healthy=i <= 2) for i in range(1, 5)]  # 50% -> 70
    c = [Endpoint("10.0.2.1", 80, zone="c")]  # not listed: no traffic
    cluster = make_cluster("round_robin", a + b + c, locality_weights="a=1,b=1")
    counts = shares(cluster, 34_000)
    to_a = sum(v for h, v in counts.items() if h.startswith("10.0.0."))
    # Effective weights 1 x 100 and 1 x 70.
    assert abs(to_a / 34_000 - 100 / 170) < 0.02
    assert "10.0.2.1" not in counts


def test_empty_service_raises_no_healthy_endpoints():
    cluster = make_cluster("peak_ewma", [])
    with pytest.raises(NoHealthyEndpointsError, match="no endpoints"):
        cluster.pick(None)


def test_host_statistics_survive_snapshot_rebuilds():
    cluster = make_cluster("round_robin", eps(3))
    first = cluster.hosts[0]
    first.start()
    first.done(0.01, "success")
    cluster.update(EndpointSnapshot("svc", tuple(eps(4)), version=2))
    assert cluster.hosts[0] is first and first.requests == 1


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_hash_affinity_holds_across_priority_levels_and_zones(policy):
    p0 = [Endpoint(f"10.0.0.{i}", 80, zone="a" if i % 2 else "b", healthy=i > 2) for i in range(1, 5)]  # 50%: spills
    p1 = [Endpoint(f"10.0.1.{i}", 80, priority=1, zone="a") for i in range(1, 5)]
    cluster = make_cluster(policy, p0 + p1, locality_weights="a=1,b=1")
    for key in ("alice", "bob", "carol", "dave"):
        assert len({cluster.pick(hash_key(key)).endpoint.host for _ in range(200)}) == 1

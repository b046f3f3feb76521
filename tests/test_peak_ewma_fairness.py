"""peak_ewma shares fairly (issue 11 item 11): tried before judged, idle hosts
re-probed, ties at random, weights honoured, slow hosts still starved."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from meshlib import Endpoint, EndpointSnapshot, ManualClock
from meshlib.core.cluster import Cluster
from meshlib.config import load_config


def cluster_of(endpoints, clock, seed=1, **keys) -> Cluster:
    cfg = load_config(environ={}, overrides={"lb_policy": "peak_ewma", **keys}).service("svc")
    c = Cluster("svc", cfg, clock=clock, rng=random.Random(seed))
    c.update(EndpointSnapshot("svc", tuple(endpoints)))
    return c


def sequential(cluster: Cluster, clock: ManualClock, calls: int, latency_of, rng: random.Random) -> list[str]:
    order = []
    for _ in range(calls):
        host = cluster.pick(None)
        host.start()
        lat = latency_of(host.endpoint.host) * rng.uniform(0.7, 1.3)
        clock.advance(lat)
        host.done(lat, "success")
        order.append(host.endpoint.host)
        clock.advance(0.0005)  # the caller's own work between calls
    return order


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_equal_endpoints_share_sequential_calls_evenly(n, seed):
    clock = ManualClock()
    c = cluster_of([Endpoint(f"10.0.0.{i + 1}", 80) for i in range(n)], clock, seed)
    order = sequential(c, clock, 1000, lambda h: 0.001, random.Random(seed))
    assert len(set(order[: 2 * n])) == n  # every endpoint tried within the first 2N calls
    counts = Counter(order)
    for host in (f"10.0.0.{i + 1}" for i in range(n)):
        assert abs(counts[host] - 1000 / n) <= 0.3 * 1000 / n, counts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_weights_one_to_two_are_honoured(seed):
    clock = ManualClock()
    c = cluster_of([Endpoint("10.0.0.1", 80, weight=1), Endpoint("10.0.0.2", 80, weight=2)], clock, seed)
    counts = Counter(sequential(c, clock, 3000, lambda h: 0.001, random.Random(seed)))
    ratio = counts["10.0.0.2"] / counts["10.0.0.1"]
    assert 1.8 <= ratio <= 2.2, counts


def test_a_new_endpoint_is_tried_before_it_is_judged():
    clock = ManualClock()
    c = cluster_of([Endpoint("10.0.0.1", 80)], clock)
    sequential(c, clock, 50, lambda h: 0.001, random.Random(1))
    c.update(EndpointSnapshot("svc", (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80))))
    assert c.pick(None).endpoint.host == "10.0.0.2"  # unobserved: probed at once, not held at default_rtt


def test_an_idle_endpoint_is_reprobed_as_its_estimate_decays():
    clock = ManualClock()
    c = cluster_of([Endpoint(f"10.0.0.{i + 1}", 80) for i in range(3)], clock)
    rng = random.Random(4)
    slow = Counter(sequential(c, clock, 300, lambda h: 0.050 if h == "10.0.0.1" else 0.001, rng))
    assert slow["10.0.0.1"] < 15  # 1 is slow: starved
    clock.advance(11)  # nothing observed for more than ewma_decay (10s): each host is re-probed
    assert "10.0.0.1" in sequential(c, clock, 3, lambda h: 0.001, rng)
    for _ in range(3):  # each probe pulls the old peak down; within a few decay times it is back
        sequential(c, clock, 100, lambda h: 0.001, rng)
        clock.advance(11)
    recovered = Counter(sequential(c, clock, 3000, lambda h: 0.001, rng))
    assert recovered["10.0.0.1"] > 3000 / 3 * 0.5, recovered


def test_a_ten_times_slower_endpoint_gets_under_ten_percent_with_sequential_calls():
    clock = ManualClock()
    c = cluster_of([Endpoint(f"10.0.0.{i + 1}", 80) for i in range(4)], clock)
    counts = Counter(sequential(c, clock, 2000, lambda h: 0.010 if h == "10.0.0.4" else 0.001, random.Random(5)))
    assert counts["10.0.0.4"] / 2000 < 0.10

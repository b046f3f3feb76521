"""Deadline propagation primitives (the contextvar and the header formats)."""

from __future__ import annotations

import pytest

from meshlib import ManualClock
from meshlib.resilience.deadline import (
    deadline,
    encode_grpc_timeout,
    incoming_deadline,
    parse_grpc_timeout,
    remaining,
    timeout_from_headers,
)


def test_nested_deadlines_only_shorten():
    clock = ManualClock()
    assert remaining(clock) is None
    with deadline(5.0, clock):
        assert remaining(clock) == 5.0
        with deadline(10.0, clock):
            assert remaining(clock) == 5.0  # the caller's deadline still rules
        with deadline(1.0, clock):
            clock.advance(0.25)
            assert remaining(clock) == 0.75
        assert remaining(clock) == 4.75
    assert remaining(clock) is None


def test_incoming_headers_bound_the_handler():
    clock = ManualClock()
    with incoming_deadline({"X-Envoy-Expected-Rq-Timeout-Ms": "1500", "grpc-timeout": "2S"}, clock):
        assert remaining(clock) == 1.5
    with incoming_deadline({}, clock):
        assert remaining(clock) is None


@pytest.mark.parametrize("value, seconds", [("100m", 0.1), ("2S", 2.0), ("1H", 3600.0), ("5u", 5e-6), ("99999999n", 0.099999999)])
def test_grpc_timeout_parsing(value, seconds):
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "100", "123456789S", "1.5S", "-1S", "10x"])
def test_malformed_grpc_timeouts_are_ignored(bad):
    assert parse_grpc_timeout(bad) is None
    assert timeout_from_headers({"grpc-timeout": bad}) is None


@pytest.mark.parametrize("seconds", [1e-9, 0.0005, 1.5, 59.9, 3600.0, 10**7])
def test_grpc_timeout_round_trip_never_shortens(seconds):
    encoded = encode_grpc_timeout(seconds)
    assert len(encoded) <= 9
    assert parse_grpc_timeout(encoded) >= seconds * (1 - 1e-9)

"""A retired endpoint channel is closed exactly once, and only when no call
holds it: however calls acquiring and releasing it interleave with its
retirement (the pool counts calls without a lock)."""

from __future__ import annotations

import threading

from meshlib.adapters.grpc.pool import Subchannel
from meshlib.endpoint import parse_endpoint


class _Channel:
    def __init__(self) -> None:
        self.closed = 0
        self.used_closed = 0


def test_a_retired_channel_closes_once_after_its_last_call() -> None:
    for _ in range(30):
        channel = _Channel()
        closes: list[int] = []
        sub = Subchannel(parse_endpoint("127.0.0.1:1"), channel, lambda ch: (closes.append(1), setattr(ch, "closed", ch.closed + 1)))
        start = threading.Barrier(9)
        got: list[int] = []

        def caller() -> None:
            start.wait()
            n = 0
            for _ in range(2000):
                if sub.acquire():
                    if channel.closed:
                        channel.used_closed += 1
                    n += 1
                    sub.release()
            got.append(n)

        def retirer() -> None:
            start.wait()
            sub.retire()

        threads = [threading.Thread(target=caller) for _ in range(8)] + [threading.Thread(target=retirer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert closes == [1] and channel.closed == 1
        assert channel.used_closed == 0  # no call ever held a closed channel
        assert sub.active == 0 and sub.closed and not sub.acquire()


def test_close_while_held_closes_at_once_and_once() -> None:
    closes: list[object] = []
    sub = Subchannel(parse_endpoint("127.0.0.1:1"), object(), closes.append)
    assert sub.acquire() and sub.active == 1
    sub.close()
    assert len(closes) == 1 and sub.closed
    sub.release()
    sub.retire()
    assert len(closes) == 1 and sub.active == 0

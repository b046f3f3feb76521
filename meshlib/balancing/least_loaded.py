"""least_loaded: power of two choices over the servers' reported load; and
``llm``, the same with prefix affinity and load reports on.

Each pick draws two distinct hosts at random and takes the one with the lower
score (ties: the first drawn)::

    score = (load_queue_weight x queue + load_kv_weight x kv + load_inflight_weight x in_flight) / weight

where ``queue`` is the waiting requests of the host's latest report plus the
requests sent there since (``balancing.load.est_queue``), ``kv`` its reported
KV-cache use (0..1) and ``in_flight`` this client's own attempts still running
there (streams count until they end). A report older than
``load_report_max_age`` is ignored: the host is then scored by its in-flight
count alone, which is what ``least_request`` does.

A call with a hash key (``hash_header``, ``meshlib.hash_key``) keeps to the
key's owner on a consistent-hash ring until the owner is saturated, then
spills to the key's next owner (``balancing.affinity``). ``llm`` is
``least_loaded`` with that bounded load at ``hash_balance_factor`` 150 and,
when ``load_affinity_choices`` is left at 0, every owner of the key a
candidate: the call goes to the lowest ``score x slowness + rank +
cold``, ``rank`` being the owner's place in the key's order
(``affinity.AFFINITY_MARGIN``, 1, per place), ``cold``
``affinity.AFFINITY_COLD`` (6) for an owner past the first that this client
has not sent the key to in the last minute (it would prefill the prefix
cold), and the slowness a host's ``pace`` (average whole time of its recent
successful attempts) over the fastest host's, so a replica half as fast counts each
request it holds twice. Load reports come from response headers and
``/metrics`` (``load_reports=auto``).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Sequence

from ..clock import Clock
from .affinity import AffinityPicker, ring_owners
from .base import Host
from .load import LoadSettings, load_settings, scorer
from .ring_hash import build_ring
from .settings import LbSettings

__all__ = ["LeastLoadedPicker", "build", "build_llm"]

#: ``llm``'s bounded load when ``hash_balance_factor`` is 0. Its owners
#: compared per keyed call when ``load_affinity_choices`` is 0: every host (the
#: walk over a key's owners stops once their steps outgrow the best cost).
LLM_BALANCE_FACTOR = 150


class LeastLoadedPicker:
    __slots__ = ("_hosts", "_n", "_rand", "_now", "_score")

    def __init__(self, hosts: Sequence[Host], rng: random.Random, clock: Clock, s: LoadSettings) -> None:
        self._hosts = tuple(hosts)
        self._n = len(self._hosts)
        self._rand = rng.random
        self._now = clock.monotonic
        self._score = scorer(s)

    def pick(self, hash_value: int | None) -> Host:
        n = self._n
        if n == 1:
            return self._hosts[0]
        rand = self._rand
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        a, b = self._hosts[i], self._hosts[j]
        now = self._now()
        score = self._score
        return b if score(b, now) < score(a, now) else a


def _build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock, s: LoadSettings, llm: bool = False):  # type: ignore[no-untyped-def]
    plain = LeastLoadedPicker(hosts, rng, clock, s)
    if len(hosts) == 1 and s.saturation == "spill":
        return plain
    hashes, idx = build_ring([h.endpoint.address for h in hosts], [h.endpoint.weight for h in hosts], cfg.ring_hash_min_size, cfg.ring_hash_max_size)
    owners = ring_owners(hashes, [hosts[i] for i in idx], len(hosts))
    return AffinityPicker(cfg.name, hosts, owners, plain, s, clock, scorer(s), llm)


def build(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock):  # type: ignore[no-untyped-def]
    return _build(hosts, cfg, rng, clock, load_settings(cfg))


def build_llm(hosts: Sequence[Host], cfg: LbSettings, rng: random.Random, clock: Clock):  # type: ignore[no-untyped-def]
    s = load_settings(cfg)
    factor = s.balance_factor if s.balance_factor > 0 else LLM_BALANCE_FACTOR / 100.0
    choices = cfg.load_affinity_choices or max(len(hosts), 1)
    return _build(hosts, cfg, rng, clock, replace(s, balance_factor=factor, affinity_choices=choices), llm=True)

"""Hashes shared by ring_hash and maglev: xxHash64, as Envoy's default."""

from __future__ import annotations

import xxhash

_xxh64 = xxhash.xxh64_intdigest


def hash_key(key: str | bytes, attempt: int = 0) -> int:
    """The 64-bit hash of a request's hash key. A retry (``attempt`` > 0) rehashes
    with the attempt as seed so it lands on another host."""
    if isinstance(key, str):
        key = key.encode("utf-8", "surrogateescape")
    return _xxh64(key, attempt)


def host_hash(address: str, seed: int = 0) -> int:
    return _xxh64(address.encode(), seed)

"""Small helpers shared by the translators: durations, percentages, Any unpacking.

Every translator raises :class:`ResourceError` for a resource to NACK; the
client turns it into the NACK's error detail and keeps the last good one.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import any_pb2, message

__all__ = ["ResourceError", "seconds", "fraction", "unpack", "type_name"]

M = TypeVar("M", bound=message.Message)

#: FractionalPercent denominators: HUNDRED, TEN_THOUSAND, MILLION.
_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


class ResourceError(ValueError):
    """The resource is invalid; the message says which field and why."""


def seconds(duration: Any) -> float:
    """A ``google.protobuf.Duration`` in seconds."""
    if duration.seconds < 0 or duration.nanos < 0:
        raise ResourceError(f"negative duration {duration.seconds}s {duration.nanos}ns")
    return duration.seconds + duration.nanos / 1e9


def fraction(percent: Any) -> float:
    """A ``FractionalPercent`` as a fraction from 0 to 1 (capped at 1, as Envoy)."""
    denominator = _DENOMINATORS.get(percent.denominator)
    if denominator is None:
        raise ResourceError(f"unknown FractionalPercent denominator {percent.denominator}")
    return min(1.0, percent.numerator / denominator)


def type_name(type_url: str) -> str:
    return type_url.rpartition("/")[2]


def unpack(any_msg: any_pb2.Any, cls: type[M], where: str) -> M:
    """``any_msg`` decoded as ``cls``, or ResourceError (wrong type or garbage bytes)."""
    want = cls.DESCRIPTOR.full_name
    if type_name(any_msg.type_url) != want:
        raise ResourceError(f"{where}: expected {want}, got {any_msg.type_url or 'an empty type_url'}")
    out = cls()
    try:
        out.ParseFromString(any_msg.value)
    except message.DecodeError as exc:
        raise ResourceError(f"{where}: {want} does not decode: {exc}") from None
    return out

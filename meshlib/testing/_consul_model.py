"""The Consul double's state: nodes, services and checks as Consul returns
them, Go durations, and the HTTP error an answer can be."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
MIN_DEREGISTER = 60.0


class _HTTPError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _duration(text: str, what: str) -> float:
    total, rest = 0.0, text.strip()
    while rest:
        m = re.match(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", rest)
        if not m:
            raise _HTTPError(400, f"Invalid {what}: {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        rest = rest[m.end() :]
    return total


def _fold(data: Any) -> Any:
    """Consul decodes JSON keys case-insensitively and accepts snake_case:
    fold keys to lower case without underscores (values untouched)."""
    if isinstance(data, dict):
        return {str(k).replace("_", "").lower(): v for k, v in data.items()}
    return data


@dataclass
class _Check:
    check_id: str
    name: str
    node: str
    dc: str
    service_id: str = ""
    service_name: str = ""
    status: str = "critical"
    output: str = ""
    ttl: float | None = None
    http: str = ""
    interval: float = 10.0
    timeout: float = 10.0
    deregister_after: float | None = None
    expires_at: float | None = None
    next_run: float = 0.0
    critical_since: float | None = None
    modify_index: int = 0

    def as_json(self, tags: list[str]) -> dict[str, Any]:
        return {
            "Node": self.node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": "",
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(tags) if self.service_id else [],
            "Type": "ttl" if self.ttl is not None else ("http" if self.http else ""),
            "Namespace": "default",
        }


@dataclass
class _Service:
    id: str
    name: str
    node: str
    dc: str
    port: int = 0
    address: str = ""
    tags: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    create_index: int = 0
    modify_index: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
            "Meta": dict(self.meta),
            "Port": self.port,
            "Weights": dict(self.weights),
            "EnableTagOverride": False,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "Namespace": "default",
            "Datacenter": self.dc,
        }


@dataclass
class _Node:
    name: str
    address: str
    dc: str
    serf_status: str = "passing"

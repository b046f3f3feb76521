"""static: endpoints written in the configuration (``ENDPOINTS`` keys)."""

from __future__ import annotations

from typing import Any, Mapping

from ..endpoint import Endpoint, EndpointSnapshot
from .base import Publish


class StaticResolver:
    def __init__(self, endpoints: Mapping[str, tuple[Endpoint, ...]]) -> None:
        self._endpoints = dict(endpoints)

    def services(self) -> frozenset[str]:
        return frozenset(self._endpoints)

    def start(self, publish: Publish) -> None:
        for name, eps in self._endpoints.items():
            publish(EndpointSnapshot(name, eps, version=1, source="static"))

    def close(self) -> None:
        """Nothing runs in the background: static endpoints never change."""

    def status(self) -> dict[str, Any]:
        return {"kind": "static", "services": len(self._endpoints)}

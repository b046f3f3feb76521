"""The resolver contract: watch a registry, publish snapshots.

A resolver is started with a ``publish`` callback and calls it with a new
:class:`EndpointSnapshot` whenever a service's endpoints change (and only
then). It never blocks a call; on failure it keeps the last good snapshot.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ..endpoint import EndpointSnapshot

Publish = Callable[[EndpointSnapshot], None]


class Resolver(Protocol):
    #: Services this resolver answers for (may grow as the registry does).
    def services(self) -> frozenset[str]: ...

    def start(self, publish: Publish) -> None: ...

    def close(self) -> None: ...

    def status(self) -> dict[str, Any]: ...

"""What the client knows of one resource (CSDS's ClientConfig entry)."""

from __future__ import annotations

from typing import Any

__all__ = ["ResourceState", "STATUSES"]

#: gRFC A78 / CSDS cache states, spelt as meshlib shows them.
STATUSES = ("requested", "does-not-exist", "acked", "nacked", "nacked-but-cached", "timeout")


class ResourceState:
    __slots__ = ("type_url", "name", "value", "version", "status", "error", "updated", "requested_at", "deleted")

    def __init__(self, type_url: str, name: str) -> None:
        self.type_url = type_url
        self.name = name
        self.value: Any = None
        self.version = ""
        self.status = "requested"
        self.error = ""
        self.updated = 0.0
        self.requested_at: float | None = None
        #: The server deleted it and the cached copy was kept (A88, fail_on_data_errors off).
        self.deleted = False

    def accept(self, value: Any, version: str, now: float) -> None:
        self.value, self.version, self.status, self.error, self.updated = value, version, "acked", "", now
        self.requested_at = None
        self.deleted = False

    def reject(self, reason: str, now: float, *, drop: bool) -> bool:
        """A NACKed update; True if the cached value was dropped (fail_on_data_errors)."""
        self.error, self.updated, self.requested_at = reason, now, None
        if self.value is not None and not drop:
            self.status = "nacked-but-cached"
            return False
        dropped = self.value is not None
        self.value, self.status = None, "nacked"
        return dropped

    def delete(self, now: float, *, drop: bool) -> bool:
        """The server no longer lists it; True if the cached value was dropped."""
        self.updated = now
        if not drop:
            self.deleted = True
            return False
        self.value, self.status, self.version = None, "does-not-exist", ""
        return True

    def copy(self) -> "ResourceState":
        c = ResourceState(self.type_url, self.name)
        for slot in self.__slots__:
            setattr(c, slot, getattr(self, slot))
        return c

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "last_updated": self.updated,
            "deleted_by_server": self.deleted,
        }

"""Access logs: one structured event per call (or per attempt), through
structlog, to the standard ``logging`` logger ``meshlib.access`` at INFO.

As with any library logger nothing is printed until the application
configures ``logging``; it routes ``meshlib.access`` like any other logger.
The event is rendered by structlog's ``JSONRenderer`` (``json``, the default)
or ``ConsoleRenderer`` (``console``) into the record's message; the fields
are also on the ``LogRecord`` as ``record.access`` (a dict) for handlers
that want them unrendered.

Sampling: ``access_log_sample`` (0..1) of the calls, plus every error when
``access_log_errors`` is on. No header is logged unless named in
``access_log_headers``, and then ``Authorization``, ``Proxy-Authorization``,
``Cookie``, ``Set-Cookie`` and the ``redact_headers`` names show as
``[redacted]``; paths are logged without their query string, URLs without
credentials.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timezone
from typing import Any

from .redact import REDACTED, SENSITIVE_HEADERS
from .settings import TelemetryConfig

__all__ = ["AccessLog", "LOGGER_NAME"]

LOGGER_NAME = "meshlib.access"
_log = logging.getLogger(LOGGER_NAME)


class AccessLog:
    """Decides whether an event is logged, renders it and hands it to ``logging``."""

    def __init__(self, cfg: TelemetryConfig, rng: random.Random | None = None) -> None:
        self.per_attempt = cfg.access_log_per == "attempt"
        self.sample = cfg.access_log_sample
        self.errors = cfg.access_log_errors
        self.headers = tuple(h.lower() for h in cfg.access_log_headers)
        self.hidden = SENSITIVE_HEADERS | cfg.redact_headers
        self._random = (rng or random.Random()).random
        self._format = cfg.access_log_format
        self._processors: tuple[Any, ...] | None = None  # built at the first event: no import before
        #: ``logging.getLogger("meshlib.access").isEnabledFor`` (what ``enabled`` asks).
        self.is_enabled_for = _log.isEnabledFor

    def enabled(self) -> bool:
        """Whether ``meshlib.access`` logs INFO at all (logging caches the answer; checked
        first, so that nothing of an event is computed when nobody would see it)."""
        return _log.isEnabledFor(logging.INFO)

    def sampled(self) -> bool:
        """Draw whether a call (or attempt) is in the sample."""
        return self.sample >= 1.0 or self._random() < self.sample

    def wanted(self, error: bool) -> bool:
        """Whether to log this event (cheap: called on every call)."""
        if not _log.isEnabledFor(logging.INFO):
            return False
        if error and self.errors:
            return True
        return self.sample >= 1.0 or self._random() < self.sample

    def header_fields(self, headers: Any) -> dict[str, str]:
        from .carriers import get_first

        out: dict[str, str] = {}
        for name in self.headers:
            value = get_first(headers, name)
            if value is not None:
                out[name] = REDACTED if name in self.hidden else value
        return out

    def emit(self, fields: dict[str, Any], error: bool) -> None:
        event: Any = dict(fields)
        event.setdefault("event", "meshlib.access")
        if self._processors is None:
            self._processors = processors(self._format)
        for proc in self._processors:
            event = proc(None, "info", event)
        _log.info(event, extra={"access": fields})


def processors(fmt: str) -> tuple[Any, ...]:
    """structlog's time stamper and renderer for ``fmt`` (``json`` or ``console``);
    without structlog installed, the standard library renders the same event."""
    try:
        import structlog
    except ImportError:
        return (_timestamp, _json if fmt == "json" else _console)
    renderer: Any = structlog.processors.JSONRenderer(sort_keys=True) if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    return (structlog.processors.TimeStamper(fmt="iso", utc=True), renderer)


def _timestamp(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["timestamp"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")  # as structlog's TimeStamper(fmt="iso", utc=True)
    return event


def _json(_logger: Any, _method: str, event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, default=repr)


def _console(_logger: Any, method: str, event: dict[str, Any]) -> str:
    rest = {k: v for k, v in event.items() if k not in ("timestamp", "event")}
    return f"{event.get('timestamp', '')} [{method}] {event.get('event', '')} " + " ".join(f"{k}={v!r}" for k, v in sorted(rest.items()))

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

import logging
import random
from typing import Any

import structlog

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
        renderer: Any = structlog.processors.JSONRenderer(sort_keys=True) if cfg.access_log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
        self._processors = (structlog.processors.TimeStamper(fmt="iso", utc=True), renderer)

    def enabled(self) -> bool:
        """Whether ``meshlib.access`` logs INFO at all (logging caches the answer; checked
        first, so that nothing of an event is computed when nobody would see it)."""
        return _log.isEnabledFor(logging.INFO)

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
        for proc in self._processors:
            event = proc(None, "info", event)
        _log.info(event, extra={"access": fields})

"""Active health checking: a checker that probes every endpoint on an interval,
and the probes it can use, registered by name (``http``, ``grpc``)."""

from .checker import HealthCheckConfig, HealthChecker, Probe, http_probe, parse_statuses

__all__ = ["HealthCheckConfig", "HealthChecker", "Probe", "http_probe", "parse_statuses"]

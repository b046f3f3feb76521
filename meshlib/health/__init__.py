"""Active health checking: a checker that probes every endpoint on an interval,
and the probes it can use, registered by name (``http``, ``grpc``)."""

from .checker import HealthCheckConfig, HealthChecker, parse_statuses
from .probes import Probe, ProbeFactory, http_probe, make_probe, probe_names, register_probe

__all__ = ["HealthCheckConfig", "HealthChecker", "Probe", "ProbeFactory", "http_probe", "make_probe", "parse_statuses", "probe_names", "register_probe"]

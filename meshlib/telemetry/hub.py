"""A Mesh's telemetry: built once from its configuration, attached to every
cluster as one observer (see ``scope``), read by ``mesh.stats()``, the admin
endpoint and the exporters."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .._tally import Tally
from ..errors import ConfigError
from .accesslog import AccessLog
from .metrics import OtelInstruments
from .propagation import Propagation, otel_installed
from .observer import ClusterTelemetry
from .settings import TelemetryConfig
from .spans import Spans

if TYPE_CHECKING:
    from ..core.cluster import Cluster
    from ..endpoint import EndpointSnapshot

__all__ = ["Telemetry", "owner_of", "default_propagation", "set_default_propagation"]

#: id(cluster) -> its telemetry observer (what the adapters' hooks look up);
#: a Mesh's entries leave with its ``close()``.
_OWNERS: dict[int, ClusterTelemetry] = {}
_DEFAULT: list[Propagation] = []


def owner_of(cluster: "Cluster") -> ClusterTelemetry | None:
    owner = _OWNERS.get(id(cluster))
    return owner if owner is not None and owner.cluster is cluster else None


def default_propagation() -> Propagation:
    """The process's propagation (the latest Mesh's settings; before any, the
    defaults and ``OTEL_PROPAGATORS``)."""
    if not _DEFAULT:
        _DEFAULT.append(Propagation())
    return _DEFAULT[0]


def set_default_propagation(prop: Propagation) -> None:
    _DEFAULT[:] = [prop]


class Telemetry:
    """Propagation, spans, metrics and the access log of one Mesh."""

    def __init__(self, config: TelemetryConfig | None = None, *, rng: random.Random | None = None) -> None:
        cfg = config or TelemetryConfig()
        self.config = cfg
        self.prop = Propagation(cfg.propagators, mode=cfg.tracing)
        set_default_propagation(self.prop)
        use_otel = cfg.tracing in ("auto", "otel") and otel_installed()
        if cfg.tracing == "otel" and not use_otel:
            raise ConfigError("MESHLIB_TRACING", "otel", "auto, native or off: otel needs OpenTelemetry (pip install 'meshlib-client[otel]')")
        self.spans: Spans | None = Spans() if use_otel else None
        self.otel_metrics: OtelInstruments | None = None
        if use_otel and cfg.metrics:
            try:
                self.otel_metrics = OtelInstruments(cfg)
            except ImportError:  # the trace API without the metrics API
                self.otel_metrics = None
        self.access: AccessLog | None = AccessLog(cfg, rng) if cfg.access_log else None
        self.clusters: dict[str, ClusterTelemetry] = {}
        self.discovery_updates: dict[str, Tally] = {}

    @property
    def active(self) -> bool:
        """False when tracing, metrics and access logs are all off: no observer at all."""
        return not self.prop.off or self.config.metrics or self.config.access_log

    def observer(self, cluster: "Cluster") -> ClusterTelemetry | None:
        """The observer factory ``Cluster(observers=[...])`` takes."""
        if not self.active:
            return None
        obs = ClusterTelemetry(self, cluster)
        _OWNERS[id(cluster)] = obs
        self.clusters[cluster.name] = obs
        self.discovery_updates.setdefault(cluster.name, Tally())
        return obs

    def watch(self, cluster: "Cluster") -> None:
        """Count the cluster's snapshot updates and drop series of endpoints that left."""
        updates = self.discovery_updates.setdefault(cluster.name, Tally())
        obs = self.clusters.get(cluster.name)

        def adopted(snapshot: "EndpointSnapshot") -> None:
            updates.add()
            if obs is not None and obs.metrics is not None:
                obs.metrics.keep_endpoints(ep.address for ep in snapshot)

        cluster.watch(adopted)

    def close(self) -> None:
        """Forget this Mesh's clusters (the hooks then find no telemetry for them)."""
        for obs in self.clusters.values():
            if _OWNERS.get(id(obs.cluster)) is obs:
                del _OWNERS[id(obs.cluster)]

    def stats(self) -> dict[str, Any]:
        from ..core.observers import observer_errors

        return {
            "tracing": "otel" if self.spans is not None else ("off" if self.prop.off else "native"),
            "propagators": "otel-global" if self.prop.otel else ",".join(self.prop.names),
            "observer_errors": observer_errors.value,
            "services": {
                name: {"discovery_updates": self.discovery_updates[name].value, **(obs.metrics.snapshot() if obs.metrics else {})}
                for name, obs in sorted(self.clusters.items())
            },
        }

"""prometheus_client export (the ``prometheus`` extra)::

    from prometheus_client import REGISTRY
    REGISTRY.register(meshlib.telemetry.prometheus.MeshCollector(mesh))

The collector reads ``mesh.stats()`` at each scrape (never on the call path).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from .export import families

__all__ = ["MeshCollector"]


class MeshCollector:
    """A prometheus_client collector of one Mesh (or of any ``stats()`` source)."""

    def __init__(self, mesh: Any) -> None:
        self._stats: Callable[[], dict[str, Any]] = mesh.stats if hasattr(mesh, "stats") else mesh

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families vary with the services

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        for f in families(self._stats()):
            labels = list(f.label_names)
            if f.type == "counter":
                m: Any = CounterMetricFamily(f.name, f.help, labels=labels)
                for values, v in f.samples:
                    m.add_metric(list(values), v)
            elif f.type == "gauge":
                m = GaugeMetricFamily(f.name, f.help, labels=labels)
                for values, v in f.samples:
                    m.add_metric(list(values), v)
            else:
                m = HistogramMetricFamily(f.name, f.help, labels=labels)
                for values, buckets, total, _count in f.samples:
                    m.add_metric(list(values), buckets, total)
            yield m

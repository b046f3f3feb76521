"""xDS: listeners, routes, clusters and endpoints from an xDS control plane.

Protobufs stay inside this package; the rest of meshlib sees its own model:
:class:`~meshlib.EndpointSnapshot` for endpoints, :mod:`meshlib.routing`
snapshots for routes, ServiceConfig field values for cluster settings.
Importing it needs the ``xds`` extra (``xds-protos``).
"""

from .bootstrap import Bootstrap, XdsServer, load_bootstrap, parse_bootstrap
from .resolver import XdsResolver

__all__ = ["Bootstrap", "XdsServer", "XdsResolver", "load_bootstrap", "parse_bootstrap"]

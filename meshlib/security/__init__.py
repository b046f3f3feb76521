"""Workload identity and mutual TLS (layer 2).

- :mod:`.identity`: ``Identity`` (chain, key, bundle; checked, immutable) and ``load_identity``.
- :mod:`.sources`: ``IdentitySource``; files watched for rotation (``FileIdentitySource``).
- :mod:`.workload`: the SPIFFE Workload API through py-spiffe (``SpiffeIdentitySource``).
- :mod:`.spiffe_id`: SPIFFE ID parsing, the one-URI-SAN rule, ``IdMatcher``.
- :mod:`.contexts`: ``ssl.SSLContext`` for clients (checks the peer inside the handshake) and servers (rotating).
- :mod:`.client`: ``TlsSettings``, ``TlsProvider`` (one per Mesh), ``ClientTls`` (one per service).
- :mod:`.grpc_tls`: gRPC channel credentials, the SPIFFE ID check grpcio cannot do, rotating server credentials.
- :mod:`.peer`: ``peer_identity(...)`` and ``AllowList`` (403 / PERMISSION_DENIED).

Adapters and the Mesh use only ``TlsProvider`` and ``ClientTls``. See docs/security.md.
"""

from __future__ import annotations

from .client import TLS_MODES, ClientTls, TlsProvider, TlsSettings
from .identity import Identity, load_identity
from .peer import AllowList, peer_identity
from .sources import FileIdentitySource, IdentitySource, StaticIdentitySource
from .spiffe_id import IdMatcher, PeerIdentityError, parse_id_list, parse_spiffe_id, spiffe_id_of

__all__ = [
    "TLS_MODES",
    "AllowList",
    "ClientTls",
    "FileIdentitySource",
    "IdMatcher",
    "Identity",
    "IdentitySource",
    "PeerIdentityError",
    "StaticIdentitySource",
    "TlsProvider",
    "TlsSettings",
    "load_identity",
    "parse_id_list",
    "parse_spiffe_id",
    "peer_identity",
    "spiffe_id_of",
]

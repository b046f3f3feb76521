"""Discovery schemes, registered by name: the one place that knows them.

Each :class:`Scheme` says how its ``MESHLIB_DISCOVERY`` value is written
(``static``, ``dns``, ``file:///path``, ``consul://host:port``, ...), how the
value is validated and normalised, and how its resolver is built from the
configuration. Configuration validation (:func:`parse_discovery`), ``Mesh``
construction (:func:`make_resolvers`), registration and the CLI all read this
registry; a new scheme is a module with its resolver plus one
:func:`register_scheme` line below. Builders import their resolver lazily, so
``import meshlib`` does not pull in py-consul, etcd3 or grpc.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from ..endpoint import _parse_host_port
from ..errors import ConfigError
from .base import Resolver
from .dns import Lookup, system_lookup
from .static import StaticResolver

if TYPE_CHECKING:  # pragma: no cover
    from ..config import MeshConfig

__all__ = [
    "Scheme",
    "BuildContext",
    "register_scheme",
    "scheme",
    "schemes",
    "accepted",
    "join_words",
    "parse_discovery",
    "registry_target",
    "make_resolvers",
]


@dataclass(frozen=True)
class BuildContext:
    """What a builder gets besides the configuration."""

    #: Services with static ``ENDPOINTS``: their configuration wins, a registry never overrides them.
    exclude: frozenset[str] = frozenset()
    dns_lookup: Lookup = system_lookup
    now: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class Scheme:
    """One way of writing ``MESHLIB_DISCOVERY``.

    ``url`` schemes are written ``name://rest`` and ``parse(rest, value,
    variable)`` returns the normalised value; the others are the bare word
    ``name``. ``build(config, context)`` returns the resolver, or None when the
    scheme needs none beyond the static endpoints every mesh has.
    ``default_port`` is set for registries (``name://host`` means that port)."""

    name: str
    form: str
    build: Callable[["MeshConfig", BuildContext], Resolver | None]
    url: bool = False
    parse: Callable[[str, str, str], str] | None = None
    default_port: int | None = None

    @property
    def label(self) -> str:
        """The scheme as a reader writes it: ``dns``, ``file://``."""
        return f"{self.name}://" if self.url else self.name


_SCHEMES: dict[str, Scheme] = {}


def register_scheme(s: Scheme) -> Scheme:
    if s.name in _SCHEMES:
        raise ValueError(f"discovery scheme {s.name!r} is already registered")
    if s.url and s.parse is None:
        raise ValueError(f"discovery scheme {s.name!r} is written as a URL and needs a parse function")
    _SCHEMES[s.name] = s
    return s


def schemes() -> Mapping[str, Scheme]:
    """Every registered scheme by name, in registration order."""
    return dict(_SCHEMES)


def join_words(items: list[str], last: str = "or") -> str:
    """``a, b or c`` (``last`` joins the final two)."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


def accepted() -> str:
    """What ``MESHLIB_DISCOVERY`` accepts, for messages and docs."""
    return join_words([s.form for s in _SCHEMES.values()])


def scheme(value: str) -> Scheme:
    """The scheme of a normalised ``MESHLIB_DISCOVERY`` value."""
    name, sep, _ = value.partition("://")
    s = _SCHEMES.get(name.lower())
    if s is None or s.url != bool(sep):
        raise ConfigError("MESHLIB_DISCOVERY", value, accepted())
    return s


def parse_discovery(value: object, name: str) -> str:
    """Validate and normalise a ``MESHLIB_DISCOVERY`` value (``name`` is the
    setting it came from): ``STATIC`` -> ``static``, ``consul://h`` ->
    ``consul://h:8500``. Raises :class:`ConfigError` naming ``name``, the value
    (credentials hidden) and every accepted form."""
    text = str(value).strip()
    prefix, sep, rest = text.partition("://")
    s = _SCHEMES.get((prefix if sep else text).lower())
    if s is None or s.url != bool(sep):
        raise ConfigError(name, value, accepted())
    if not s.url:
        return s.name
    assert s.parse is not None
    return s.parse(rest, text, name)


def registry_target(value: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a normalised registry value such as
    ``etcd://[::1]:2379`` (the host without brackets)."""
    name, _, rest = value.partition("://")
    host, _, port = rest.rpartition(":")
    return name, host.strip("[]"), int(port)


def make_resolvers(cfg: "MeshConfig", *, dns_lookup: Lookup = system_lookup, now: Callable[[], float] = time.monotonic) -> list[Resolver]:
    """The resolvers of ``cfg``: the static endpoints (if any service has
    some), then the resolver of ``cfg.discovery``'s scheme."""
    static = {name: svc.endpoints for name, svc in cfg.services.items() if svc.endpoints is not None}
    resolvers: list[Resolver] = [StaticResolver(static)] if static else []
    built = scheme(cfg.discovery).build(cfg, BuildContext(frozenset(static), dns_lookup, now))
    if built is not None:
        resolvers.append(built)
    return resolvers


# -- the built-in schemes ------------------------------------------------------------------


def _file_path(rest: str, value: str, name: str) -> str:
    if not rest:
        raise ConfigError(name, value, accepted(), detail="the file:// URL has no path")
    return "file://" + rest


def _registry_address(scheme_name: str, default_port: int) -> Callable[[str, str, str], str]:
    def parse(rest: str, value: str, name: str) -> str:
        rest = rest.rstrip("/")
        just = f"{scheme_name}:// is followed by host:port only; credentials and TLS have their own MESHLIB_{scheme_name.upper()}_* keys"
        if "@" in rest or "?" in rest:  # user:password@, ?token=... -- keep secrets out of the message
            host = rest.partition("?")[0].rpartition("@")[2]
            shown = f"{scheme_name}://{'<credentials hidden>@' if '@' in rest.partition('?')[0] else ''}{host}"
            raise ConfigError(name, shown + ("?<query hidden>" if "?" in rest else ""), accepted(), detail=just)
        if not rest or "/" in rest:
            raise ConfigError(name, value, accepted(), detail=just)
        if not (rest.rpartition(":")[2].isdigit() and (not rest.startswith("[") or "]:" in rest)):
            rest = f"{rest}:{default_port}"
        try:
            host, port = _parse_host_port(rest, name)
        except ConfigError as exc:
            raise ConfigError(name, value, accepted(), detail=str(exc).partition(" is invalid: ")[2]) from None
        return f"{scheme_name}://{f'[{host}]' if ':' in host else host}:{port}"

    return parse


def _no_resolver(cfg: "MeshConfig", ctx: BuildContext) -> None:
    """static: the ENDPOINTS of the configuration are all there is."""
    return None


def _file(cfg: "MeshConfig", ctx: BuildContext) -> Resolver:
    from .file import FileResolver

    return FileResolver(cfg.discovery[len("file://") :], cfg.file_poll_interval)


def _dns(cfg: "MeshConfig", ctx: BuildContext) -> Resolver:
    from .dns import DnsResolver

    targets = {
        name: (svc.dns_name or name, svc.port, svc.dns_refresh_interval)
        for name, svc in cfg.services.items()
        if name not in ctx.exclude
    }
    return DnsResolver(targets, lookup=ctx.dns_lookup, now=ctx.now)


def _registry_args(cfg: "MeshConfig", ctx: BuildContext) -> tuple[tuple[str, int], dict]:
    _, host, port = registry_target(cfg.discovery)
    declared = frozenset(cfg.services) - ctx.exclude
    return (host, port), {"declared": declared, "exclude": ctx.exclude, "now": ctx.now}


def _consul(cfg: "MeshConfig", ctx: BuildContext) -> Resolver:
    from .consul import ConsulResolver  # py-consul and requests, only when used

    (host, port), kw = _registry_args(cfg, ctx)
    return ConsulResolver(host, port, cfg.registry, **kw)


def _etcd(cfg: "MeshConfig", ctx: BuildContext) -> Resolver:
    from .etcd import EtcdResolver  # etcd3 and grpc, only when used

    (host, port), kw = _registry_args(cfg, ctx)
    return EtcdResolver(host, port, cfg.registry, **kw)


#: Consul's HTTP API port, etcd's client port.
CONSUL_PORT, ETCD_PORT = 8500, 2379

register_scheme(Scheme("static", "static", _no_resolver))
register_scheme(Scheme("dns", "dns", _dns))
register_scheme(Scheme("file", "file:///path/to/endpoints.yaml", _file, url=True, parse=_file_path))
register_scheme(Scheme("consul", "consul://host:port", _consul, url=True, parse=_registry_address("consul", CONSUL_PORT), default_port=CONSUL_PORT))
register_scheme(Scheme("etcd", "etcd://host:port", _etcd, url=True, parse=_registry_address("etcd", ETCD_PORT), default_port=ETCD_PORT))
register_scheme(Scheme("xds", "xds", _no_resolver))  # the Mesh builds the xDS client: it also publishes routes and cluster policies

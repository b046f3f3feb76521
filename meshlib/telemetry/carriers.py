"""Reading and writing headers in whatever carries them: dicts, requests'
and httpx's header objects, gRPC metadata (a sequence of pairs) and WSGI
``environ`` (``HTTP_*`` keys) / ASGI scopes (``headers`` as byte pairs)."""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["get_all", "get_first", "set_header", "keys", "pairs"]


def _wsgi_name(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def pairs(carrier: Any) -> Iterable[tuple[str, str]]:
    """Every (name, value) of ``carrier``, names as sent."""
    if carrier is None:
        return ()
    if _is_asgi(carrier):
        return [(_text(k), _text(v)) for k, v in carrier["headers"]]  # an ASGI scope
    if isinstance(carrier, dict) and ("REQUEST_METHOD" in carrier or "wsgi.version" in carrier):
        return [(k[5:].replace("_", "-").lower(), v) for k, v in carrier.items() if k.startswith("HTTP_") and isinstance(v, str)]
    if hasattr(carrier, "items") and not isinstance(carrier, (list, tuple)):
        multi = getattr(carrier, "multi_items", None)  # httpx.Headers
        if multi is not None:
            return list(multi())
        return [(k, v) for k, v in carrier.items()]
    return [(_text(k), _text(v)) for k, v in carrier]


def _is_asgi(carrier: Any) -> bool:
    return isinstance(carrier, dict) and "type" in carrier and isinstance(carrier.get("headers"), (list, tuple))


def _text(v: Any) -> str:
    return v.decode("latin-1") if isinstance(v, (bytes, bytearray)) else str(v)


def get_all(carrier: Any, name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive), in order."""
    low = name.lower()
    if isinstance(carrier, dict) and ("REQUEST_METHOD" in carrier or "wsgi.version" in carrier):
        v = carrier.get(_wsgi_name(name))
        return [v] if isinstance(v, str) else []
    if _is_asgi(carrier):
        return [v for k, v in pairs(carrier) if k.lower() == low]
    getter = getattr(carrier, "get_list", None)  # httpx.Headers
    if getter is not None:
        return list(getter(low))
    if isinstance(carrier, dict):
        v = carrier.get(name)
        if v is None:
            v = carrier.get(low)
        if v is not None:
            return [_text(v)]
    elif hasattr(carrier, "items") and hasattr(carrier, "get") and not isinstance(carrier, (list, tuple)):
        v = carrier.get(name)  # requests' CaseInsensitiveDict, email.Message
        return [] if v is None else [_text(v)]
    return [v for k, v in pairs(carrier) if k.lower() == low]


def get_first(carrier: Any, name: str) -> str | None:
    values = get_all(carrier, name)
    return values[0] if values else None


#: Header-object types read with their own ``get`` (requests' CaseInsensitiveDict and the like).
_GETTABLE: dict[type, bool] = {}


def has_any(carrier: Any, names: Any) -> bool:
    """Whether ``carrier`` holds any of the headers ``names`` (lower-case): a cheap test first."""
    if type(carrier) is dict and not ("REQUEST_METHOD" in carrier or "wsgi.version" in carrier or "type" in carrier):
        for n in names:  # plain headers: the exact lower-case name, then any other spelling
            if n in carrier:
                return True
        for k in carrier:
            if isinstance(k, str) and k.lower() in names:
                return True
        return False
    container = getattr(carrier, "_container", None)  # urllib3's HTTPHeaderDict: lower-case name -> [name, values...]
    if type(container) is dict:
        for n in names:
            if n in container:
                return True
        return False
    if isinstance(carrier, dict) or isinstance(carrier, (list, tuple)):
        return any(get_all(carrier, n) for n in names)
    store = getattr(carrier, "_store", None)  # requests' CaseInsensitiveDict: lower-case name -> (name, value)
    if type(store) is dict:
        for n in names:
            if n in store:
                return True
        return False
    items = getattr(carrier, "_list", None)  # httpx.Headers: (name, lower-case name, value), bytes
    if type(items) is list:
        for item in items:
            if item[1].decode("latin-1") in names:
                return True
        return False
    kind = type(carrier)
    gettable = _GETTABLE.get(kind)
    if gettable is None:
        gettable = _GETTABLE.setdefault(kind, hasattr(carrier, "get") and hasattr(carrier, "items") and not hasattr(carrier, "get_list"))
    if gettable:
        get = carrier.get
        return any(get(n) is not None for n in names)
    return any(get_all(carrier, n) for n in names)


def keys(carrier: Any) -> list[str]:
    return [k for k, _ in pairs(carrier)]


def set_header(carrier: Any, name: str, value: str) -> None:
    """Set ``name`` (replacing what it held): item assignment for mappings,
    remove-and-append for a list of pairs (gRPC metadata)."""
    if isinstance(carrier, list):
        low = name.lower()
        carrier[:] = [kv for kv in carrier if str(kv[0]).lower() != low]
        carrier.append((low, value))
        return
    if isinstance(carrier, dict):
        low = name.lower()
        for k in [k for k in carrier if isinstance(k, str) and k.lower() == low and k != name]:
            del carrier[k]
    carrier[name] = value

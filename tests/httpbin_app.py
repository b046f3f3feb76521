"""PyPI httpbin behind a small recording wrapper, served by gunicorn in the
HTTP conformance tests (``gunicorn tests.httpbin_app:app``).

Every request's method, target, headers (in order) and a SHA-256 of its body are
appended as one JSON line to the file named by ``MESHLIB_HTTPBIN_LOG``
before httpbin answers, so a test that got its answer can read what the
server observed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from typing import Any, Callable, Iterable

from httpbin import app as httpbin_app

_LOG = os.environ.get("MESHLIB_HTTPBIN_LOG", "")
_lock = threading.Lock()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["wsgi.input_terminated"] = True
    # In the order they came (gunicorn fills the environ in wire order; a
    # repeated field arrives joined with ",").
    headers = [
        (k[5:].replace("_", "-").lower() if k.startswith("HTTP_") else k.replace("_", "-").lower(), v)
        for k, v in environ.items()
        if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")
    ]
    record = {
        "port": environ.get("SERVER_PORT"),
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("RAW_URI") or environ.get("PATH_INFO"),
        "headers": headers,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_length": len(body),
    }
    if _LOG:
        with _lock, open(_LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
    return httpbin_app(environ, start_response)  # type: ignore[no-any-return]

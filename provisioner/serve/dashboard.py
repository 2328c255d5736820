"""A tiny client of the Ray dashboard's HTTP API (Serve REST API and node listing), on urllib.

Errors are sorted the way the engine's retry policy wants them: a refused or reset connection, a
timeout or a 5xx is a :class:`TransientProviderError` (worth retrying); a 4xx is a
:class:`ServeError` carrying the dashboard's own error text (Serve's validation message), which
retrying would not change.

Serve REST API: https://docs.ray.io/en/latest/serve/api/index.html#serve-rest-api
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import Any

from provisioner.errors import ServeError, TransientProviderError

SERVE_PATH = "/api/serve/applications/"
NODES_PATH = "/api/v0/nodes"
VERSION_PATH = "/api/version"

GET_TIMEOUT_S = 10.0
# The first PUT starts Serve's controller and proxies synchronously (~2.5 s measured); later
# ones return in milliseconds.
PUT_TIMEOUT_S = 60.0
_ERROR_TEXT_LIMIT = 4000


def _url(dashboard_url: str, path: str) -> str:
    return dashboard_url.rstrip("/") + path


def request_json(
    method: str, url: str, body: Any = None, *, timeout: float = GET_TIMEOUT_S
) -> Any:
    """Send one request and decode the JSON answer (None for an empty body)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        text = _error_text(error)
        if error.code >= 500:
            raise TransientProviderError(
                f"{method} {url}: dashboard answered {error.code}: {text}"
            ) from None
        raise ServeError(f"{method} {url} refused ({error.code}): {text}") from None
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise TransientProviderError(
            f"{method} {url}: dashboard not reachable ({reason})",
            hint="check that the Ray head is running and its dashboard port is reachable",
        ) from None
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise TransientProviderError(
            f"{method} {url}: dashboard answered with something that is not JSON: "
            f"{raw[:200]!r}"
        ) from None


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read().decode(errors="replace").strip()
    except OSError:
        text = ""
    return (text or str(error.reason))[-_ERROR_TEXT_LIMIT:]


def get_applications(dashboard_url: str, *, timeout: float = GET_TIMEOUT_S) -> dict[str, Any]:
    """``GET /api/serve/applications/``: the whole Serve status document."""
    answer = request_json("GET", _url(dashboard_url, SERVE_PATH), timeout=timeout)
    return answer if isinstance(answer, dict) else {}


def put_applications(
    dashboard_url: str, body: dict[str, Any], *, timeout: float = PUT_TIMEOUT_S
) -> None:
    """``PUT /api/serve/applications/``: declare the WHOLE set of applications (Serve deletes
    those missing from ``body`` and redeploys only those whose config changed)."""
    request_json("PUT", _url(dashboard_url, SERVE_PATH), body, timeout=timeout)


def get_nodes(dashboard_url: str, *, timeout: float = GET_TIMEOUT_S) -> dict[str, Any]:
    """``GET /api/v0/nodes`` (state API): the cluster's nodes."""
    answer = request_json("GET", _url(dashboard_url, NODES_PATH), timeout=timeout)
    return answer if isinstance(answer, dict) else {}


def get_version(dashboard_url: str, *, timeout: float = 2.0) -> dict[str, Any]:
    answer = request_json("GET", _url(dashboard_url, VERSION_PATH), timeout=timeout)
    return answer if isinstance(answer, dict) else {}

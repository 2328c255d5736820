"""Reaching a Ray dashboard: directly, or through an SSH tunnel when it listens privately.

A ``serve_app`` records ``dashboard_url`` as the head sees it (``http://127.0.0.1:8265`` on an
SSH head, whose dashboard binds to loopback) and, for SSH clusters, ``dashboard_tunnel``: the
head's SSH connection. One tunnel per (connection, URL) is opened on first use and kept for the
rest of the process, so the many GETs of a deploy do not each pay an SSH handshake.
"""

from __future__ import annotations

import atexit
import json
import threading
from typing import Any, Mapping
from urllib.parse import urlparse

_TUNNELS: dict[str, str] = {}
_GUARD = threading.Lock()


def dashboard_url_for(attributes: Mapping[str, Any]) -> str:
    """A URL this process can reach the dashboard at (raises ProviderError if it cannot)."""
    url = str(attributes["dashboard_url"]).rstrip("/")
    tunnel = attributes.get("dashboard_tunnel")
    if not tunnel:
        return url
    key = json.dumps([tunnel, url], sort_keys=True)
    with _GUARD:
        if key not in _TUNNELS:
            from provisioner.remote.connect import runner_for

            parsed = urlparse(url)
            opened = runner_for(tunnel).tunnel(parsed.hostname, parsed.port or 80)
            local_port = opened.__enter__()
            atexit.register(opened.__exit__, None, None, None)
            _TUNNELS[key] = f"http://127.0.0.1:{local_port}"
        return _TUNNELS[key]

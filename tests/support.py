"""Helpers shared by the tests that start real Ray: free ports, and clean-up that stops every
Ray process a test started (found by its temp dir), even when the test failed."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

from provisioner.providers import processes
from provisioner.providers.local import BASE_DIR, WORKER_PORTS


def free_ports(count: int) -> list[int]:
    """Distinct free ports outside Ray's worker port range (``ray start`` refuses those)."""
    ports: set[int] = set()
    holders = []
    while len(ports) < count:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        holders.append(sock)
        port = sock.getsockname()[1]
        if port not in WORKER_PORTS:
            ports.add(port)
    for sock in holders:
        sock.close()
    return sorted(ports)


def stop_local_heads(lineage: str | None) -> list[str]:
    """Stop every local head owned by ``lineage`` and say which temp dirs had survivors."""
    if not lineage:
        return []
    owner_dir = BASE_DIR / lineage.replace("-", "")[:8]
    leftovers = []
    for owner_file in owner_dir.glob("*/owner.json"):
        record = json.loads(owner_file.read_text())
        temp_dir = str(owner_file.parent)
        if processes.ray_processes(record.get("pgid"), temp_dir):
            leftovers.append(temp_dir)
            processes.stop_ray(record.get("pgid"), temp_dir, grace_s=10)
        shutil.rmtree(owner_file.parent, ignore_errors=True)
    return leftovers


def state_lineage(state_file: Path) -> str | None:
    try:
        return json.loads(state_file.read_text())["lineage"]
    except (OSError, ValueError, KeyError):
        return None

"""Helpers shared by the tests that start real Ray: free ports, and clean-up that stops every
Ray process a test started (found by its temp dir), even when the test failed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

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


def run_cli(workdir: Path, env: dict[str, str], *args: str,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m provisioner ARGS`` in ``workdir``, as a pipeline runs it; whatever it
    answers, it never crashes with a traceback."""
    result = subprocess.run([sys.executable, "-m", "provisioner", *args], cwd=workdir, env=env,
                            text=True, capture_output=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert "internal error" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def json_events(output: str) -> Iterator[dict[str, Any]]:
    """The events of a ``--json`` run's output."""
    for line in output.splitlines():
        if line.startswith("{"):
            yield json.loads(line)

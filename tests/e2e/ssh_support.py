"""What the SSH end-to-end tests share: the hosts file, the CLI, HTTP probes, a client loop."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.harness.fixtures import harness_hosts

ROOT = Path(__file__).resolve().parents[2]
RAY_DIR = "/var/lib/provisioner/ray"


@contextmanager
def ssh_cluster(workdir: Path, hosts: list[str], *, prefix: str, subnet: str,
                **hosts_extra) -> Iterator[tuple[Path, object]]:
    """Namespace hosts plus a working directory with examples/ssh and the quickstart's apps;
    at the end (also after a failure) destroy what the test left, then the hosts go."""
    with harness_hosts(hosts, prefix=prefix, subnet=subnet) as info:
        shutil.copy(ROOT / "examples" / "ssh" / "cluster.yaml", workdir / "cluster.yaml")
        shutil.copytree(ROOT / "examples" / "quickstart", workdir / "quickstart")
        spec = (workdir / "cluster.yaml").read_text()
        (workdir / "cluster.yaml").write_text(
            spec.replace("../quickstart/serve.yaml", "quickstart/serve.yaml"))
        write_hosts(workdir, info, hosts, **hosts_extra)
        try:
            yield workdir, info
        finally:
            subprocess.run([sys.executable, "-m", "provisioner", "destroy", "--auto-approve",
                            "--var-file", "hosts.json", "--var", f"python={sys.executable}"],
                           cwd=workdir, capture_output=True, timeout=300,
                           stdin=subprocess.DEVNULL)


def write_hosts(workdir: Path, info, names: list[str], **extra) -> None:
    data = info.to_json()
    data["hosts"] = [h for h in data["hosts"] if h["name"] in names]
    (workdir / "hosts.json").write_text(json.dumps({**data, **extra}))


def cli(cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    workdir, _ = cluster
    result = subprocess.run(
        [sys.executable, "-m", "provisioner", *args, "--var-file", "hosts.json",
         "--var", f"python={sys.executable}"],
        cwd=workdir, text=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    # Ray's own error texts may quote tracebacks; ours never show (they say "internal error").
    assert "internal error" not in result.stderr, result.stderr
    return result


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:  # the body says who answered (HAProxy or Serve)
        return error.code, error.read().decode(errors="replace")[:300]


def eventually(probe, expected, seconds: float):
    """``probe()`` until it returns ``expected`` (a node's proxy starts a little after the
    replica Serve places there); the last answer otherwise."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            answer = probe()
        except OSError as error:
            answer = error
        if answer == expected or time.monotonic() > deadline:
            return answer == expected or answer
        time.sleep(0.5)


class ClientLoop:
    """Requests through the LB the whole time, bounded in count and time; records outcomes.

    A request fails when it gets an error or no answer within ``timeout`` (30 s, what a real
    client waits; a request queued in Serve while a replica moves to another node may take
    seconds, which is slow, not failed). ``slowest`` is the longest answer that came."""

    def __init__(self, url: str, max_requests: int = 20000, max_seconds: float = 300,
                 timeout: float = 30.0) -> None:
        self.url, self.max_requests, self.max_seconds = url, max_requests, max_seconds
        self.timeout = timeout
        self.slowest = 0.0
        self.results: list[tuple[float, bool]] = []
        self.errors: list[tuple[str, str]] = []  # (UTC time, what came back)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ClientLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and len(self.results) < self.max_requests:
            if time.monotonic() - started > self.max_seconds:
                break
            sent = time.monotonic()
            try:
                answer = get(self.url, timeout=self.timeout)
                ok = answer == (200, "hello world (v1)")
                self.slowest = max(self.slowest, time.monotonic() - sent)
            except OSError as error:
                answer, ok = error, False
            self.results.append((time.monotonic(), ok))
            if not ok:
                self.errors.append((time.strftime("%H:%M:%S", time.gmtime())
                                    + f".{int(time.time() * 1000) % 1000:03d}", repr(answer)))
            time.sleep(0.02)

    def failures(self, after: float = 0.0) -> int:
        return sum(1 for at, ok in self.results if at >= after and not ok)


def nodes_with_replicas(cluster, head: str = "head") -> set[str]:
    """Addresses of the nodes running a replica, from the head's own dashboard (which only
    listens on the head's loopback)."""
    _, info = cluster
    fetch = ("import urllib.request; print(urllib.request.urlopen("
             "'http://127.0.0.1:8265/api/serve/applications/', timeout=10).read().decode())")
    answer = info.harness.exec(head, [sys.executable, "-c", fetch])
    apps = json.loads(answer.stdout)["applications"]
    return {replica["node_ip"] for app in apps.values() for d in app["deployments"].values()
            for replica in d["replicas"] if replica["state"] == "RUNNING"}


def session_ids(cluster, names) -> dict[str, str]:
    _, info = cluster
    return {name: info.harness.exec(
        name, f"basename $(readlink {RAY_DIR}/tmp/session_latest)").stdout.strip()
        for name in names}

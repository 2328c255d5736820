"""``local_ray_head``: a Ray head node started on this machine with ``ray start --head``.

Implements :class:`provisioner.providers.base.ResourceType` (see there for the contract).

Identity is a marker file: every head lives in its own temp dir
``/tmp/provisioner/<owner.short>/<short name of the address>`` whose ``owner.json`` records the
cluster, state lineage, address, idempotency token, desired attributes and the process group of
its daemons. ``owner.json`` is written *before* Ray starts, so an interrupted create is found by
:meth:`LocalRayHead.list` (by token) and adopted. The temp dir stays short because Ray puts unix
sockets under it and their paths must stay below 107 characters.

Ray is started in a new session so its daemons share one process group; stopping a head stops
that group, every process tied to its temp dir and their descendants (see
:mod:`provisioner.providers.processes`), never another Ray on the machine: ``ray stop`` kills every
Ray of the machine and is never used.

Measured on Ray 2.60 (2 cores): ``ray start --head`` takes about 8.5 s, the dashboard answers the
Serve API as soon as it returns, a staged stop takes about 1 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from provisioner.errors import ProviderError, TransientProviderError
from provisioner.providers import processes
from provisioner.providers.base import ListScope, LiveResource, ResourceType

BASE_DIR = Path("/tmp/provisioner")
OWNER_FILE = "owner.json"
START_LOG = "ray-start.log"

# serve_http_options: Serve fixes its HTTP options when it starts on this head and ignores later
# changes, so they belong to the head: a change replaces it (and redeploys the apps).
DESIRED = ("gcs_port", "dashboard_port", "client_server_port", "dashboard_agent_port",
           "num_cpus", "node_ip", "serve_http_options")
OPTIONAL = ("num_cpus", "serve_http_options")
PORT_KEYS = ("gcs_port", "dashboard_port", "client_server_port", "dashboard_agent_port")
COMPUTED = ("session_id", "gcs_address", "dashboard_url", "package_dir", "pgid", "temp_dir")

# Ray's default range for worker ports (``--min-worker-port``/``--max-worker-port``); `ray start`
# refuses any other port inside it.
WORKER_PORTS = range(10002, 20000)

START_TIMEOUT_S = 120.0
DASHBOARD_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
_NAME_LIMIT = 10


def short_name(address: str) -> str:
    """A file-name-safe, short (<= 10 chars) name for ``address`` that stays unique."""
    name = address.split(".", 1)[1] if "." in address else address
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "head"
    if clean == name and len(clean) <= _NAME_LIMIT:
        return clean
    digest = hashlib.sha256(address.encode()).hexdigest()[:4]
    return f"{clean[: _NAME_LIMIT - 5]}_{digest}"


def ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if not found:
        raise ProviderError("the `ray` command is not installed",
                            hint="install Ray with: pip install 'ray[serve]'")
    return found


def port_in_use(port: int) -> bool:
    """Whether anything listens on ``port`` on any local address (IPv4 or IPv6)."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this machine
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
        except OSError:
            return True
        finally:
            sock.close()
    return False


def _accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalRayHead(ResourceType):
    """A Ray head on this machine. See :mod:`provisioner.providers.base` for the contract."""

    type_name = "local_ray_head"
    force_new = frozenset(DESIRED)
    computed = frozenset(COMPUTED)

    def __init__(self, ctx, *, base_dir: Path | None = None) -> None:
        super().__init__(ctx)
        self.base_dir = Path(base_dir or BASE_DIR)

    # ---- paths and the marker file ------------------------------------------------------------

    def owner_dir(self) -> Path:
        return self.base_dir / self.ctx.owner.short

    def temp_dir_for(self, address: str) -> Path:
        return self.owner_dir() / short_name(address)

    def _read_owner(self, temp_dir: Path) -> dict[str, Any] | None:
        try:
            data = json.loads((temp_dir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_owner(self, temp_dir: Path, data: dict[str, Any]) -> None:
        path = temp_dir / OWNER_FILE
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(data, handle, sort_keys=True, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    # ---- contract -----------------------------------------------------------------------------

    def list(self, scope: ListScope) -> list[LiveResource]:
        found = []
        for marker in sorted(self.owner_dir().glob(f"*/{OWNER_FILE}")):
            record = self._read_owner(marker.parent)
            if not record or record.get("lineage") != scope.owner.lineage:
                continue
            if self._alive(marker.parent, record):
                found.append(self._live(marker.parent, record))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        temp_dir = self.temp_dir_for(address)
        record = self._read_owner(temp_dir)
        if record is not None:
            if record.get("lineage") != self.ctx.owner.lineage:
                raise ProviderError(f"{temp_dir} belongs to another state "
                                    f"(lineage {record.get('lineage')})", address=address)
            if self._alive(temp_dir, record):
                if record.get("token") == token:
                    self.ctx.progress(address, "Ray head already running (same token): adopted")
                    self._wait_dashboard(address, temp_dir, record)
                    return self._live(temp_dir, record)
                raise ProviderError(
                    f"another Ray head of this state already runs in {temp_dir}",
                    address=address,
                    hint="run `provisioner plan` again: the state does not record it",
                )
            self.ctx.progress(address, f"cleaning up a dead Ray head in {temp_dir}")
            self._stop_and_remove(address, temp_dir, record.get("pgid"))

        attributes = self._check_desired(address, desired)
        (temp_dir / "packages").mkdir(parents=True, exist_ok=True)
        record = {
            "cluster": self.ctx.owner.cluster,
            "lineage": self.ctx.owner.lineage,
            "address": address,
            "token": token,
            "attributes": attributes,
            "pgid": None,
            "created_at": time.time(),
        }
        self._write_owner(temp_dir, record)
        try:
            self._start(address, temp_dir, record)
            self._wait_dashboard(address, temp_dir, record)
        except BaseException:
            # Leave nothing behind: the error carries Ray's own output.
            self._stop_and_remove(address, temp_dir, record.get("pgid"), quiet=True)
            raise
        return self._live(temp_dir, record)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        raise ProviderError(
            "a local Ray head cannot be changed in place (every attribute forces replacement)",
            address=address,
        )

    def delete(self, address: str, prior: LiveResource) -> None:
        temp_dir = Path(prior.attributes.get("temp_dir") or self.temp_dir_for(address))
        if self.owner_dir() not in temp_dir.parents:
            raise ProviderError(f"refusing to remove {temp_dir}: not under {self.owner_dir()}",
                                address=address)
        record = self._read_owner(temp_dir)
        if record is not None and record.get("lineage") != self.ctx.owner.lineage:
            raise ProviderError(f"{temp_dir} belongs to another state", address=address)
        pgid = (record or {}).get("pgid") or prior.attributes.get("pgid")
        self._stop_and_remove(address, temp_dir, pgid)

    def is_head(self, attributes) -> bool:
        return True

    def head_health(self, record: LiveResource) -> str | None:
        from provisioner.serve import dashboard

        temp_dir = Path(record.attributes.get("temp_dir") or self.temp_dir_for(record.address))
        owner = self._read_owner(temp_dir)
        if owner is None or owner.get("lineage") != self.ctx.owner.lineage:
            return f"its directory {temp_dir} is gone"
        if not self._alive(temp_dir, owner):
            return "Ray's GCS is not running"
        try:
            dashboard.get_version(record.attributes["dashboard_url"])
        except (ProviderError, KeyError):
            return "the dashboard does not answer"
        return None

    def status(self, record: LiveResource) -> dict[str, Any]:
        from provisioner.serve import dashboard, readers

        url = record.attributes.get("dashboard_url")
        facts: dict[str, Any] = {"session_id": record.attributes.get("session_id"),
                                 "dashboard_url": url, "nodes": []}
        if not url:
            return facts
        try:
            facts["nodes"] = readers.read_nodes(dashboard.get_nodes(url))
        except ProviderError as error:
            facts["error"] = str(error)
        return facts

    # ---- helpers ------------------------------------------------------------------------------

    def _check_desired(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        attributes = {key: desired.get(key) for key in DESIRED}
        missing = [key for key in DESIRED if key not in OPTIONAL and attributes[key] in (None, "")]
        if missing:
            raise ProviderError(f"missing attributes: {', '.join(missing)}", address=address)
        seen: dict[int, str] = {}
        ports = {key: attributes[key] for key in PORT_KEYS}
        if attributes["serve_http_options"]:
            ports["serve http port"] = attributes["serve_http_options"].get("port")
        for key, value in ports.items():
            try:
                port = int(value)
            except (TypeError, ValueError):
                raise ProviderError(f"{key} must be a port number, not {value!r}",
                                    address=address) from None
            if key in attributes:
                attributes[key] = port
            if not 0 < port < 65536:
                raise ProviderError(f"{key} {port} is not a port number", address=address)
            if port in seen:
                raise ProviderError(f"{key} and {seen[port]} are both {port}; Ray needs distinct "
                                    "ports", address=address)
            if port in WORKER_PORTS:
                raise ProviderError(
                    f"{key} {port} lies in Ray's worker port range "
                    f"{WORKER_PORTS.start}-{WORKER_PORTS.stop - 1}, which `ray start` refuses",
                    address=address, hint=f"pick a {key} outside that range (--var ...)")
            seen[port] = key
            if port_in_use(port):
                raise ProviderError(
                    f"{key} {port} is in use by another process",
                    address=address, hint=f"pick another {key} with --var ...")
        if attributes["num_cpus"] is not None:
            attributes["num_cpus"] = int(attributes["num_cpus"])
        attributes["node_ip"] = str(attributes["node_ip"])
        return attributes

    def _command(self, temp_dir: Path, attributes: dict[str, Any]) -> list[str]:
        node_ip = attributes["node_ip"]
        command = [
            ray_executable(), "start", "--head",
            f"--port={attributes['gcs_port']}",
            f"--node-ip-address={node_ip}",
            "--include-dashboard=true",
            f"--dashboard-host={node_ip}",
            f"--dashboard-port={attributes['dashboard_port']}",
            f"--ray-client-server-port={attributes['client_server_port']}",
            f"--dashboard-agent-listen-port={attributes['dashboard_agent_port']}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ]
        if attributes.get("num_cpus") is not None:
            command.append(f"--num-cpus={attributes['num_cpus']}")
        return command

    def _start(self, address: str, temp_dir: Path, record: dict[str, Any]) -> None:
        command = self._command(temp_dir, record["attributes"])
        self.ctx.progress(address, f"starting Ray head in {temp_dir}")
        # Ray >= 2.52 turns token auth on by itself when ~/.ray/auth_token exists (any earlier
        # ray.init() writes one), which would lock us out of our own dashboard; say which mode.
        # https://docs.ray.io/en/latest/ray-security/token-auth.html
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
        started = time.monotonic()
        with open(temp_dir / START_LOG, "wb") as log:
            # A new session gives the daemons a process group of their own (recorded so that
            # delete stops exactly them); cwd inside the temp dir ties every process, workers
            # included, to this head (see processes.mentions).
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=temp_dir, env=env,
                                    start_new_session=True)
        record["pgid"] = proc.pid
        self._write_owner(temp_dir, record)
        while True:
            try:
                code = proc.wait(timeout=5.0)
                break
            except subprocess.TimeoutExpired:
                waited = time.monotonic() - started
                if waited > START_TIMEOUT_S:
                    proc.kill()
                    proc.wait()
                    raise ProviderError(f"`ray start` did not finish in {START_TIMEOUT_S:.0f}s:\n"
                                        + self._log_tail(temp_dir), address=address) from None
                self.ctx.progress(address, f"starting Ray head ({waited:.0f}s)")
        if code != 0:
            raise ProviderError(f"`ray start` failed (exit {code}):\n" + self._log_tail(temp_dir),
                                address=address)
        self.ctx.progress(address, f"Ray started in {time.monotonic() - started:.1f}s")

    def _wait_dashboard(self, address: str, temp_dir: Path, record: dict[str, Any]) -> None:
        from provisioner.serve import dashboard

        url = self._dashboard_url(record["attributes"])
        deadline = time.monotonic() + DASHBOARD_TIMEOUT_S
        last_report = 0.0
        while True:
            try:
                dashboard.get_applications(url, timeout=2.0)
                return
            except ProviderError as error:
                now = time.monotonic()
                if now > deadline:
                    raise ProviderError(
                        f"the dashboard at {url} did not answer in {DASHBOARD_TIMEOUT_S:.0f}s: "
                        f"{error}", address=address,
                        hint=f"see the logs in {temp_dir}/session_latest/logs") from None
                if now - last_report > 5.0:
                    self.ctx.progress(address, f"waiting for the dashboard at {url}")
                    last_report = now
                time.sleep(0.5)

    def _log_tail(self, temp_dir: Path, lines: int = 25) -> str:
        try:
            text = (temp_dir / START_LOG).read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.strip().splitlines()[-lines:])

    @staticmethod
    def _dashboard_url(attributes: dict[str, Any]) -> str:
        host = attributes["node_ip"]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{attributes['dashboard_port']}"

    def _alive(self, temp_dir: Path, record: dict[str, Any]) -> bool:
        attributes = record.get("attributes") or {}
        port = attributes.get("gcs_port")
        if not port:
            return False
        # Ray writes the GCS address once GCS is up; until then the head is not there yet.
        host = self._gcs_address(temp_dir).rpartition(":")[0]
        if not host or not (_accepts(host, int(port)) or _accepts("127.0.0.1", int(port))):
            return False
        pgid = record.get("pgid")
        if pgid:
            return processes.group_alive(int(pgid), str(temp_dir))
        return bool(processes.ray_processes(None, str(temp_dir)))

    @staticmethod
    def _gcs_address(temp_dir: Path) -> str:
        try:
            return (temp_dir / "ray_current_cluster").read_text().strip()
        except OSError:
            return ""

    @staticmethod
    def session_id(temp_dir: Path) -> str:
        try:
            return os.path.basename(os.readlink(temp_dir / "session_latest"))
        except OSError:
            return ""

    def _live(self, temp_dir: Path, record: dict[str, Any]) -> LiveResource:
        attributes = dict(record.get("attributes") or {})
        session = self.session_id(temp_dir)
        attributes.update(
            session_id=session,
            # Ray resolves a loopback --node-ip-address to the machine's address, so the GCS
            # address is read from what Ray wrote, not derived from node_ip.
            gcs_address=self._gcs_address(temp_dir),
            dashboard_url=self._dashboard_url(attributes),
            package_dir=str(temp_dir / "packages"),
            pgid=record.get("pgid"),
            temp_dir=str(temp_dir),
        )
        return LiveResource(address=str(record.get("address")), id=session or str(temp_dir),
                            attributes=attributes, token=record.get("token"))

    def _stop_and_remove(self, address: str, temp_dir: Path, pgid: Any,
                         quiet: bool = False) -> None:
        found = processes.ray_processes(int(pgid) if pgid else None, str(temp_dir))
        if found and not quiet:
            self.ctx.progress(address, f"stopping Ray ({len(found)} processes)")
        survivors = processes.stop_ray(int(pgid) if pgid else None, str(temp_dir), STOP_GRACE_S)
        if survivors:
            raise TransientProviderError(
                f"Ray processes of {temp_dir} survived SIGKILL: "
                + " ".join(str(pid) for pid in sorted(survivors)),
                address=address,
                hint="kill -9 " + " ".join(str(pid) for pid in sorted(survivors))
                + f" && rm -rf {temp_dir}")
        shutil.rmtree(temp_dir, ignore_errors=True)
        if temp_dir.exists():
            raise ProviderError(f"could not remove {temp_dir}", address=address,
                                hint=f"rm -rf {temp_dir}")
        try:
            temp_dir.parent.rmdir()  # the owner's directory, once its last head is gone
        except OSError:
            pass
        if not quiet:
            self.ctx.progress(address, "Ray head stopped and its temp dir removed")

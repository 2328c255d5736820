"""``ray_node``: Ray on one machine (head or worker), kept running by provisioner's node
supervisor. See :mod:`provisioner.providers.base` for the contract.

On the machine, everything lives under ``<node_dir>/ray``: the supervisor script (from
``templates/ray-node-supervisor.sh.j2``), the head record (``head_address``, read by a worker's
supervisor at every start), the Serve packages (``packages/``, the ``file://`` working_dirs),
Ray's temp dir (``tmp/``) and the ``owner.json`` marker. Where systemd runs, a unit keeps the
supervisor alive; elsewhere it runs as a detached background loop.

What changes in place: the head record (a worker connected to another head restarts onto the new
one) and the package set (new packages are copied, Ray keeps running). Everything else forces a
replacement. An unchanged node is never touched.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from provisioner.errors import ProviderError
from provisioner.providers.base import ListScope, LiveResource, ResourceType
from provisioner.remote.connect import quick, runner_for
from provisioner.remote.runner import json_object
from provisioner.templates import render

START_TIMEOUT_S = 180.0
WAIT_ROUND_S = 10.0
# Run on the node by _wait_until_up: argv = ray dir, dashboard URL ("" on workers), a session
# id that does not count (""), seconds to wait. Prints the session id once Ray is up.
WAIT_SCRIPT = """
import os, sys, time, urllib.request
ray_dir, url, previous, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
latest = os.path.join(ray_dir, "tmp", "session_latest")
end = time.time() + limit
while time.time() < end:
    try:
        session = os.path.basename(os.readlink(latest))
        if (session.startswith("session_") and session != previous
                and os.path.exists(os.path.join(latest, "sockets", "raylet"))):
            if url:
                urllib.request.urlopen(url, timeout=2)
            print(session)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(3)
"""
STOP_TIMEOUT_S = 45.0
DRAIN_S = 60.0
UNIT = "provisioner-ray.service"


def ray_dir(attributes: dict[str, Any]) -> str:
    return f"{attributes['node_dir']}/ray"


class RayNode(ResourceType):
    """Ray on one machine. See :mod:`provisioner.providers.base` for the contract."""

    type_name = "ray_node"
    force_new = frozenset({"role", "node_dir", "python", "node_ip", "gcs_port", "dashboard_port",
                           "num_cpus", "serve_http_options"})
    computed = frozenset({"session_id", "gcs_address", "dashboard_url", "package_dir",
                          "supervisor"})
    ignore_drift = frozenset({"connection", "packages", "package_sources"})
    # Package names (content digests) decide what a node holds; where this machine packs them
    # from (a directory, or a file restored from a checkpoint) does not.
    ignore_changes = frozenset({"package_sources"})

    # -- list ----------------------------------------------------------------------------------

    def list(self, scope: ListScope) -> list[LiveResource]:
        known = [k for k in scope.known if k.attributes.get("connection")
                 and not isinstance(k.attributes.get("connection"), str)]
        if not known:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(known))) as pool:
            found = pool.map(lambda k: self._probe(k.address, dict(k.attributes),
                                                   k.address in scope.rebuilding), known)
        return [item for item in found if item is not None]

    def _probe(self, address: str, attributes: dict[str, Any],
               rebuilding: bool = False) -> LiveResource | None:
        from provisioner.remote.ssh import HostKeyMismatch

        directory = ray_dir(attributes)
        try:
            # Files only (SFTP, one session per connection): a shell command would start the
            # user's login shell on every host at every refresh.
            runner = self._runner(address, attributes)
            owner = json_object(runner.read(f"{directory}/owner.json") or b"")
            if owner.get("lineage") != self.ctx.owner.lineage:
                return None
            pid = (runner.read(f"{directory}/supervisor.pid") or b"").decode().strip()
            # The supervisor writes its pid under systemd too; its command line guards against
            # a reused pid.
            if not pid.isdigit() or b"supervisor" not in (
                    runner.read(f"/proc/{pid}/cmdline") or b""):
                return None
            supervisor = ("systemd" if runner.read(f"/etc/systemd/system/{UNIT}") is not None
                          else "loop")
            session = posixpath.basename(runner.readlink(f"{directory}/tmp/session_latest")
                                         or "")
        except HostKeyMismatch:
            if rebuilding:
                return None  # its host is being rebuilt with a new key: this node goes too
            raise
        except ProviderError:
            return None  # host unreachable: the node is gone for the plan's purposes
        record = owner.get("attributes") or {}
        return self._live(address, {**record, "connection": attributes["connection"],
                                    "packages": attributes.get("packages"),
                                    "package_sources": attributes.get("package_sources")},
                          owner.get("token"), session, supervisor)

    # -- create / update / delete ----------------------------------------------------------------

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        runner = self._runner(address, desired)
        directory = ray_dir(desired)
        existing = self._probe(address, desired)
        if existing is not None and existing.token == token:
            return existing
        self.ctx.progress(address, "writing the supervisor")
        # A supervisor left from an earlier life of this node (an interrupted create, a replace)
        # must not run beside the new one.
        # One round trip also says whether systemd runs and which packages are there.
        quoted = shlex.quote(directory)
        prepared = runner.run(
            _stop_script(desired) + f"; mkdir -p {quoted}/packages && rm -rf {quoted}/tmp && "
            "{ [ -d /run/systemd/system ] && echo systemd || echo loop; } && "
            f"ls {quoted}/packages", timeout=STOP_TIMEOUT_S + 60).stdout.split()
        owner = {"lineage": self.ctx.owner.lineage, "address": address, "token": token,
                 "attributes": _desired_only(desired)}
        runner.put(f"{directory}/owner.json", json.dumps(owner).encode(), mode=0o600)
        self._sync_packages(address, runner, desired, present=set(prepared[1:]))
        if desired["role"] == "worker":
            runner.put(f"{directory}/head_address", f"{desired['head_address']}\n".encode())
        supervisor_path = f"{directory}/supervisor.sh"
        runner.put(supervisor_path, render(
            "ray-node-supervisor.sh.j2", address=address, role=desired["role"],
            ray_dir=directory, python=desired["python"], node_ip=desired["node_ip"],
            gcs_port=desired["gcs_port"], dashboard_port=desired["dashboard_port"],
            num_cpus=desired.get("num_cpus"),
        ).encode(), mode=0o755)
        supervisor = self._start_supervisor(address, runner, directory, supervisor_path,
                                            systemd=prepared[0] == "systemd")
        session = self._wait_until_up(address, runner, desired)
        return self._live(address, desired, token, session, supervisor)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        runner = self._runner(address, desired)
        directory = ray_dir(desired)
        self._sync_packages(address, runner, desired)
        previous_session = None
        if desired["role"] == "worker" and any(
                desired.get(key) != prior.attributes.get(key) for key in HEAD_KEYS):
            # Another head (or the same address with a new head, after recover): rejoin now.
            # Ray would leave a lost head by itself only after its GCS reconnect timeout (60 s).
            self.ctx.progress(address, f"joining the new head {desired['head_address']}")
            runner.put(f"{directory}/head_address", f"{desired['head_address']}\n".encode())
            # SIGKILL: on SIGTERM `ray start --block` first asks the (old, lost) GCS to drain
            # this node and waits 30 s for an answer that never comes (measured on Ray 2.60).
            # Then stop what it started; the supervisor starts Ray again from the new record.
            runner.run(f"kill -KILL $(cat {shlex.quote(directory)}/ray.pid) 2>/dev/null; "
                       f"{shlex.quote(desired['python'])} -m ray.scripts.scripts stop --force "
                       ">/dev/null 2>&1; true", timeout=STOP_TIMEOUT_S + 60)
            previous_session = prior.attributes.get("session_id")
        owner = {**json_object(runner.read(f"{directory}/owner.json") or b"{}"),
                 "attributes": _desired_only(desired)}
        runner.put(f"{directory}/owner.json", json.dumps(owner).encode(), mode=0o600)
        session = self._wait_until_up(address, runner, desired, previous_session)
        return self._live(address, desired, prior.token, session,
                          prior.attributes.get("supervisor", "loop"))

    def delete(self, address: str, prior: LiveResource) -> None:
        from provisioner.remote.ssh import HostKeyMismatch

        attributes = prior.attributes
        directory = shlex.quote(ray_dir(attributes))
        try:
            runner = self._runner(address, attributes)
            # Draining keeps serving while a worker leaves; when everything goes, it is moot.
            if (attributes.get("role") == "worker" and attributes.get("head_address")
                    and not self.ctx.destroying):
                self._drain(address, runner, attributes)
            self.ctx.progress(address, "stopping Ray")
            runner.run(_stop_script(attributes) + f"; rm -rf {directory}",
                       timeout=STOP_TIMEOUT_S + 60)
        except HostKeyMismatch:
            raise
        except ProviderError as error:
            if self._probe(address, attributes) is None:
                return  # unreachable and not ours any more: gone (e.g. the host was lost)
            raise error

    # -- recover -------------------------------------------------------------------------------

    def is_head(self, attributes) -> bool:
        return attributes.get("role") == "head"

    def head_health(self, record: LiveResource) -> str | None:
        attributes = record.attributes
        python = shlex.quote(attributes["python"])
        url = f"http://127.0.0.1:{int(attributes['dashboard_port'])}/api/version"
        check = (f"{python} -c 'import socket, sys, urllib.request\n"
                 f"try: socket.create_connection((\"{attributes['node_ip']}\", "
                 f"{int(attributes['gcs_port'])}), 3).close()\n"
                 "except OSError: sys.exit(\"GCS\")\n"
                 f"try: urllib.request.urlopen(\"{url}\", timeout=3)\n"
                 "except OSError: sys.exit(\"dashboard\")'")
        try:
            result = runner_for(quick(attributes["connection"]), record.address).run(
                check, timeout=15, check=False)
        except ProviderError as error:
            return f"its host does not answer ({error})"
        if result.exit_code == 0:
            return None
        what = "GCS" if "GCS" in result.stderr else "dashboard"
        return f"Ray's {what} does not answer on the head's host"

    # -- helpers --------------------------------------------------------------------------------

    def _drain(self, address: str, runner, attributes: dict[str, Any]) -> None:
        """Ask Ray to drain this worker, so Serve starts its replicas elsewhere before they stop
        here (no request meets a dying replica), then wait until none is left. Best effort: a
        worker whose head is gone has nothing to drain to."""
        python = shlex.quote(attributes["python"])
        self.ctx.progress(address, "draining: moving Serve replicas to other nodes")
        runner.run(
            f"{python} -m ray.scripts.scripts drain-node "
            f"--address {shlex.quote(attributes['head_address'])} "
            "--reason DRAIN_NODE_REASON_PREEMPTION --reason-message 'removed by provisioner' "
            f"--deadline-remaining-seconds {int(DRAIN_S)} >/dev/null 2>&1 && "
            f"for i in $(seq {int(DRAIN_S)}); do "
            "pgrep -f 'ray::ServeReplica' >/dev/null || break; sleep 1; done",
            timeout=DRAIN_S + 60, check=False)

    def _runner(self, address: str, attributes: dict[str, Any]):
        return runner_for(attributes["connection"], address)

    def _start_supervisor(self, address: str, runner, directory: str, script: str, *,
                          systemd: bool) -> str:
        quoted = shlex.quote(directory)
        if systemd:
            unit = render("ray-node.service.j2", address=address, supervisor_path=script)
            runner.put(f"/etc/systemd/system/{UNIT}", unit.encode())
            runner.run(f"systemctl daemon-reload && systemctl enable --now {UNIT}")
            return "systemd"
        # No systemd: a detached loop in its own session, so it outlives our SSH connection.
        # (The supervisor writes its own pid: setsid may fork, so $! here could be setsid's.)
        runner.run(f"cd {quoted} && rm -f supervisor.pid && setsid nohup sh {shlex.quote(script)}"
                   " > supervisor.log 2>&1 < /dev/null &")
        return "loop"

    def _wait_until_up(self, address: str, runner, desired: dict[str, Any],
                       previous_session: str | None = None) -> str:
        """Wait for this node's raylet (and on the head, the dashboard); return the session id.
        With ``previous_session``: wait for another one (a worker's session is its head's).

        The polling runs on the node (every 0.2 s, for up to WAIT_ROUND_S per command), not as
        one SSH command per poll: an SSH round trip costs more than the poll itself."""
        url = (f"http://127.0.0.1:{int(desired['dashboard_port'])}/api/version"
               if desired["role"] == "head" else "")
        command = " ".join(shlex.quote(part) for part in (
            desired["python"], "-c", WAIT_SCRIPT, ray_dir(desired), url, previous_session or "",
            str(WAIT_ROUND_S)))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            result = runner.run(command, timeout=WAIT_ROUND_S + 30, check=False)
            session = result.stdout.strip()
            if result.exit_code == 0 and session.startswith("session_"):
                return session
            self.ctx.progress(address, "waiting for Ray to start")
        directory = shlex.quote(ray_dir(desired))
        log = runner.run(f"tail -n 20 {directory}/supervisor.log", check=False).stdout
        raise ProviderError(f"Ray did not start within {START_TIMEOUT_S:.0f}s; supervisor log:\n"
                            f"{log}", address=address)

    def _sync_packages(self, address: str, runner, desired: dict[str, Any],
                       present: set[str] | None = None) -> None:
        """Copy the Serve packages this node lacks (built locally, deterministic, by name).
        ``present``: the node's packages, when the caller already listed them."""
        packages = desired.get("packages") or []
        if not packages:
            return
        from provisioner.serve.package import build_package

        target = f"{ray_dir(desired)}/packages"
        if present is None:
            present = set(runner.run(f"ls {shlex.quote(target)} 2>/dev/null", check=False)
                          .stdout.split())
        cache = self.ctx.data_dir / "packages"
        sources = desired.get("package_sources") or {}
        for name in packages:
            if name in present:
                continue
            if name not in sources:
                raise ProviderError(f"no source is known for package {name}", address=address)
            built = build_package(Path(sources[name]), cache)
            if built.name != name:
                raise ProviderError(f"{sources[name]} changed since the plan "
                                    f"({built.name} != {name})", address=address,
                                    hint="run plan again")
            self.ctx.progress(address, f"copying {built.name}")
            runner.put(f"{target}/{built.name}", built.read_bytes())

    def _live(self, address: str, attributes: dict[str, Any], token: str | None, session: str,
              supervisor: str) -> LiveResource:
        desired = _desired_only(attributes)
        computed = {
            "session_id": session,
            "gcs_address": f"{attributes['node_ip']}:{attributes['gcs_port']}",
            "dashboard_url": f"http://127.0.0.1:{attributes['dashboard_port']}",
            "package_dir": f"{ray_dir(attributes)}/packages",
            "supervisor": supervisor,
        }
        return LiveResource(address, f"{attributes['node_ip']}/{session}",
                            {**desired, "connection": attributes.get("connection"),
                             "packages": attributes.get("packages"),
                             "package_sources": attributes.get("package_sources"), **computed},
                            token)


def _stop_script(attributes: dict[str, Any]) -> str:
    """Stop this node's supervisor (systemd unit or loop) and its Ray; fine if none runs.
    Returns at once when no Ray process runs at all (`ray stop` alone costs seconds)."""
    directory = shlex.quote(ray_dir(attributes))
    return (
        # Process names, not command lines: a pattern given to `pgrep -f` would match the
        # command line of the very shell running this script.
        f"if {{ command -v systemctl >/dev/null && systemctl is-enabled --quiet {UNIT} "
        "2>/dev/null; } || pgrep -x raylet >/dev/null || pgrep -x gcs_server >/dev/null || "
        f"kill -0 \"$(cat {directory}/supervisor.pid 2>/dev/null)\" 2>/dev/null; then "
        + _stop_everything(attributes, directory)
        + f"; else rm -f {directory}/supervisor.pid; fi"
    )


def _stop_everything(attributes: dict[str, Any], directory: str) -> str:
    return (
        f"if command -v systemctl >/dev/null && systemctl is-enabled --quiet {UNIT} 2>/dev/null;"
        f" then systemctl disable --now {UNIT}; rm -f /etc/systemd/system/{UNIT}; "
        "systemctl daemon-reload; fi; "
        f"pid=$(cat {directory}/supervisor.pid 2>/dev/null); "
        "if [ -n \"$pid\" ] && kill -TERM \"$pid\" 2>/dev/null; then "
        f"for i in $(seq {int(STOP_TIMEOUT_S)}); do kill -0 \"$pid\" 2>/dev/null || break; "
        "sleep 1; done; kill -KILL \"$pid\" 2>/dev/null; fi; "
        # Whatever the supervisor managed, no Ray of this node may outlive it.
        f"{shlex.quote(attributes['python'])} -m ray.scripts.scripts stop --force >/dev/null 2>&1;"
        " rm -f " + f"{directory}/supervisor.pid"
    )


DESIRED = ("role", "node_dir", "python", "node_ip", "gcs_port", "dashboard_port", "num_cpus",
           "serve_http_options", "head_address", "head_generation")
# A worker rejoins when either changes: ``head_generation`` counts heads replaced by recover
# (the new head may keep the old address).
HEAD_KEYS = ("head_address", "head_generation")


def _desired_only(attributes: dict[str, Any]) -> dict[str, Any]:
    return {key: attributes.get(key) for key in DESIRED}

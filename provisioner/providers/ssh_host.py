"""``ssh_host``: a machine reached over SSH, as the cluster knows it. See
:mod:`provisioner.providers.base` for the contract.

It owns the host's trust and our directory there:
- Host key: at first contact the plan scans the key (``read_facts``) and shows its fingerprint;
  apply connects only if the host still presents that key, and records it. From then on every
  connection verifies it; a changed key stops the run with a clear error and changes nothing.
  A key pinned in the spec (or found in ``known_hosts``) is used instead of scanning.
- ``node_dir`` with an ``owner.json`` marker (lineage, address, token): how ``list`` tells our
  hosts from others, and how an interrupted create is found.
- ``connection``: the SSH target with the verified key, which every resource acting on this host
  references (``${ssh_host.<name>.connection}``).
"""

from __future__ import annotations

import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from provisioner.errors import ProviderError
from provisioner.providers.base import ListScope, LiveResource, ResourceType
from provisioner.remote.connect import runner_for
from provisioner.remote.runner import json_object

TARGET_KEYS = ("address", "port", "user", "key_file", "alias", "known_hosts")


def connection_of(attributes: dict[str, Any], host_key: str | None,
                  address: str) -> dict[str, Any]:
    target = {key: attributes.get(key) for key in TARGET_KEYS}
    target["host_key"] = host_key
    target["host_resource"] = address  # see provisioner.remote.connect.runner_for
    return target


class SSHHost(ResourceType):
    """A machine reached over SSH. See :mod:`provisioner.providers.base` for the contract."""

    type_name = "ssh_host"
    force_new = frozenset({"address", "port", "node_dir"})
    computed = frozenset({"host_key", "fingerprint", "hostname", "connection"})
    plan_facts = frozenset({"host_key", "fingerprint"})

    def read_facts(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        if desired.get("pinned_host_key"):
            key = desired["pinned_host_key"]
            return {"host_key": key, "fingerprint": _fingerprint(key)}
        from provisioner.remote.ssh import SSHTarget, scan_host_key

        target = {key: desired.get(key) for key in TARGET_KEYS}
        scanned = scan_host_key(SSHTarget.from_mapping(target))
        return {"host_key": f"{scanned.type} {scanned.base64}",
                "fingerprint": scanned.fingerprint_sha256}

    def list(self, scope: ListScope) -> list[LiveResource]:
        candidates = [k for k in scope.known if k.attributes.get("host_key")]
        if not candidates:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(candidates))) as pool:
            found = pool.map(lambda known: self._probe(known.address, dict(known.attributes),
                                                   known.address in scope.rebuilding),
                             candidates)
        return [item for item in found if item is not None]

    def _probe(self, address: str, attributes: dict[str, Any],
               rebuilding: bool = False) -> LiveResource | None:
        """Our marker on the host, or None when the host is unreachable or not ours. A changed
        host key is NOT "unreachable": it raises, so the plan stops before changing anything,
        unless the user asked to rebuild this host (then its new key is shown for approval)."""
        from provisioner.remote.ssh import HostKeyMismatch

        runner = self._runner(address, attributes, attributes["host_key"])
        try:  # files only (SFTP): no login shell started on every host at every refresh
            raw = (runner.read(f"{attributes['node_dir']}/owner.json") or b"").decode(
                errors="replace")
            hostname = (runner.read("/proc/sys/kernel/hostname") or b"").decode().strip()
        except HostKeyMismatch:
            if rebuilding:
                return None
            raise
        except ProviderError:
            return None
        owner = json_object(raw)
        if owner.get("lineage") != self.ctx.owner.lineage:
            return None
        return self._live(address, attributes, attributes["host_key"], hostname, owner.get("token"))

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        host_key = desired.get("host_key") or desired.get("pinned_host_key")
        if not host_key:
            raise ProviderError("no host key to trust: the plan could not read one (was the host"
                                " reachable when the plan was made?)", address=address,
                                hint="check the host answers on SSH, then run plan again")
        runner = self._runner(address, desired, host_key)
        node_dir = desired["node_dir"]
        self.ctx.progress(address, f"preparing {node_dir}")
        runner.run(f"mkdir -p {shlex.quote(node_dir)} && chmod 700 {shlex.quote(node_dir)}")
        marker = {"lineage": self.ctx.owner.lineage, "cluster": self.ctx.owner.cluster,
                  "address": address, "token": token}
        runner.put(f"{node_dir}/owner.json", json.dumps(marker).encode(), mode=0o600)
        if desired.get("install_ray"):
            self._ensure_ray(address, runner, desired)
        hostname = runner.run("hostname", timeout=20).stdout.strip()
        return self._live(address, desired, host_key, hostname, token)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        runner = self._runner(address, desired, prior.attributes["host_key"])
        if desired.get("install_ray"):
            self._ensure_ray(address, runner, desired)
        hostname = runner.run("hostname", timeout=20).stdout.strip()
        return self._live(address, desired, prior.attributes["host_key"], hostname, prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        runner = self._runner(address, prior.attributes, prior.attributes.get("host_key"))
        node_dir = shlex.quote(prior.attributes["node_dir"])
        # Contents first, then the directory if it can go (it may be a mount point).
        runner.run(f"[ ! -d {node_dir} ] || {{ find {node_dir} -mindepth 1 -delete && "
                   f"{{ rmdir {node_dir} 2>/dev/null || true; }}; }}")

    def _runner(self, address: str, attributes: dict[str, Any], host_key: str | None):
        return runner_for(connection_of(attributes, host_key, address))

    def _ensure_ray(self, address: str, runner, desired: dict[str, Any]) -> None:
        python = shlex.quote(desired["python"])
        version = desired.get("ray_version")
        have = runner.run(f"{python} -c 'import ray; print(ray.__version__)'", check=False)
        if have.exit_code == 0 and (not version or have.stdout.strip() == version):
            return
        spec = f"ray[serve]=={version}" if version else "ray[serve]"
        self.ctx.progress(address, f"installing {spec}")
        runner.run(f"{python} -m pip install -q {shlex.quote(spec)}", timeout=1200)

    def _live(self, address: str, attributes: dict[str, Any], host_key: str, hostname: str,
              token: str | None) -> LiveResource:
        desired = {key: attributes.get(key) for key in
                   (*TARGET_KEYS, "node_dir", "pinned_host_key", "install_ray", "python",
                    "ray_version")}
        return LiveResource(
            address=address,
            id=f"{attributes['address']}:{attributes.get('port') or 22}",
            attributes={**desired, "host_key": host_key, "fingerprint": _fingerprint(host_key),
                        "hostname": hostname,
                        "connection": connection_of(attributes, host_key, address)},
            token=token,
        )


def _fingerprint(host_key: str) -> str:
    """OpenSSH's SHA256 fingerprint of '<type> <base64>'."""
    import base64
    import hashlib

    blob = base64.b64decode(host_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")

"""The OpenSSH side of the hosts: keys, per-host ``sshd_config``, known_hosts, installing sshd,
and waiting until every sshd accepts connections.

Files under the harness root (``/var/lib/<prefix>-harness``)::

    id_ed25519, id_ed25519.pub    the one client key pair (no passphrase) for user root
    authorized_keys               its public key; every host's sshd reads this one file
    known_hosts                   every host's current public host key, by address
    hosts/<name>/ssh_host_ed25519_key[.pub]   kept across restart (same VM, same key) unless
                                              fresh_host_key=True (a rebuilt VM)
    hosts/<name>/sshd_config

Every sshd is the real ``/usr/sbin/sshd -D -e -f <sshd_config>``, listening on the host's own
address, port 22, key-only root login, no PAM (no systemd or logind in the hosts).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

from tests.harness.model import HarnessError

SSHD = "/usr/sbin/sshd"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_POLICY_RC = Path("/usr/sbin/policy-rc.d")


def ensure_installed(sshd: str = SSHD) -> None:
    """Install openssh-server when sshd is missing (root only), without letting the package
    start a machine-wide sshd on 0.0.0.0:22."""
    if os.access(sshd, os.X_OK) and shutil.which("ssh-keygen"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise HarnessError(f"{sshd} (openssh-server) is not installed; install it with "
                           "`apt-get install -y openssh-server`, or run the harness as root on a "
                           "Debian/Ubuntu machine so it installs it itself")
    # policy-rc.d exiting 101 tells dpkg not to start services (Debian's documented switch).
    ours = not _POLICY_RC.exists()
    if ours:
        _POLICY_RC.write_text("#!/bin/sh\n# made by tests/harness for one apt-get run\nexit 101\n")
        _POLICY_RC.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "openssh-server"]
        if subprocess.run(install, env=env, capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            done = subprocess.run(install, env=env, capture_output=True, text=True)
            if done.returncode:
                raise HarnessError(f"`{' '.join(install)}` failed:\n{done.stderr[-2000:]}")
    finally:
        if ours:
            _POLICY_RC.unlink(missing_ok=True)
    _stop_packaged_sshd(sshd)


def _stop_packaged_sshd(sshd: str) -> None:
    """If a packaged sshd got started anyway (a permissive policy-rc.d), stop it: the harness's
    sshds listen only on host addresses. Called only right after we installed the package."""
    try:
        pid = int(Path("/run/sshd.pid").read_text().split()[0])
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError, IndexError):
        return
    if exe == sshd:
        os.kill(pid, 15)


def _keygen(path: Path, comment: str) -> None:
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True, capture_output=True, stdin=subprocess.DEVNULL)


def public_key(path: Path) -> str:
    """The public half of a key pair as 'ssh-ed25519 AAAA...' (comment dropped)."""
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def ensure_client_key(root: Path) -> Path:
    """The client key pair and the authorized_keys file that every host trusts."""
    key = root / "id_ed25519"
    if not (key.exists() and key.with_name("id_ed25519.pub").exists()):
        _keygen(key, f"harness-client@{root.name}")
    (root / "authorized_keys").write_text(public_key(key) + "\n")
    return key


def ensure_host_key(host_dir: Path, *, fresh: bool = False) -> str:
    key = host_dir / "ssh_host_ed25519_key"
    if fresh or not (key.exists() and key.with_name(key.name + ".pub").exists()):
        _keygen(key, f"root@{host_dir.name}")
    return public_key(key)


def write_config(host_dir: Path, *, address: str, root: Path, session_path: str) -> Path:
    config = host_dir / "sshd_config"
    config.write_text("\n".join([
        f"# sshd of harness host {host_dir.name}; written by tests/harness/sshd.py",
        f"ListenAddress {address}:22",
        f"HostKey {host_dir / 'ssh_host_ed25519_key'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        # No PAM: the hosts have no logind/systemd session to register with.
        "UsePAM no",
        # The key files live under the harness root, not in ~/.ssh with ssh's expected modes.
        "StrictModes no",
        "PidFile /run/sshd.pid",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        # Sessions get this machine's PATH, so its Python, ray and haproxy are found as on a VM
        # image that has them installed (sshd's compiled-in PATH lacks e.g. a pyenv Python).
        f"SetEnv PATH={session_path}",
        # Tunnels (the Ray dashboard on 8265) and file copies (SFTP) as on a stock VM.
        "AllowTcpForwarding yes",
        "Subsystem sftp internal-sftp",
        # Parallel provisioning opens many connections at once; don't drop them as a flood.
        "MaxStartups 100:30:200",
        "MaxSessions 100",
    ]) + "\n")
    return config


def write_known_hosts(path: Path, keys: Iterable[tuple[str, str]]) -> None:
    """``keys``: (address, "ssh-ed25519 AAAA...") pairs. Rewritten whole: a rebuilt host
    (fresh key) replaces its old line."""
    temp = path.with_suffix(".tmp")
    temp.write_text("".join(f"{address} {key}\n" for address, key in keys))
    os.replace(temp, path)


def accepts(address: str, port: int = 22, timeout: float = 0.2) -> bool:
    with socket.socket() as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((address, port)) == 0


def wait_ready(hosts: dict[str, str], *, alive: Callable[[str], bool],
               console: Callable[[str], str], timeout: float) -> None:
    """Poll until every host's sshd accepts TCP on port 22. ``hosts``: name -> address.
    Fails fast, naming the host and showing its console, when a host's init died."""
    pending = dict(hosts)
    deadline = time.monotonic() + timeout
    while pending:
        for name, address in list(pending.items()):
            if accepts(address):
                del pending[name]
            elif not alive(name):
                raise HarnessError(f"host {name} ({address}) died while starting; its console:"
                                   f"\n{console(name)}")
        if pending and time.monotonic() > deadline:
            name, address = next(iter(pending.items()))
            raise HarnessError(f"sshd of host {name} ({address}) did not accept TCP on port 22 "
                               f"within {timeout:g}s; its console:\n{console(name)}")
        if pending:
            time.sleep(0.02)

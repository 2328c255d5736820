"""A real OpenSSH server for the SSH runner tests: ``sshd -D -e`` on 127.0.0.1:<free port> with a
fresh ed25519 host key and one authorized client key, always stopped at teardown.

sshd needs root. Outside CI the tests skip (saying why) when it cannot run; with ``CI=true`` they
fail instead, so a CI image that lost sshd does not go green by skipping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

SSHD = "/usr/sbin/sshd"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "sshd tests need root (sshd refuses to run privilege separation otherwise)"
    if not os.path.exists(SSHD):
        return f"{SSHD} is not installed"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen is not installed"
    return None


def require_sshd() -> None:
    why = _unavailable()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and the real-sshd tests cannot run: {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path, comment: str = "provisioner-test") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True)
    return path


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd's per-connection processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class SSHServer:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.host_key = keygen(directory / "ssh_host_ed25519_key", "test-host")
        self.client_key = keygen(directory / "client_key", "test-client")
        (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
        self.config = directory / "sshd_config"
        self.log = directory / "sshd.log"
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {directory / 'authorized_keys'}",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "Subsystem sftp internal-sftp",
            "MaxStartups 50:30:100",
            "LogLevel VERBOSE",
            "",
        ]))
        self.proc: subprocess.Popen | None = None

    @property
    def host_key_line(self) -> str:
        return " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on port {self.port}:\n{self.log.read_text()}")

    def stop(self) -> None:
        """Stop the listener and every connection it serves (sshd -D leaves those running)."""
        if self.proc is None:
            return
        below = _descendants(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    require_sshd()
    server = SSHServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()

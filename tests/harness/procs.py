"""Finding and stopping the processes of harness hosts.

Every host's init is started with a marker argument ``--harness-host=<prefix>:<name>``; the
``unshare`` process that waits for it (outside the host) carries the same argument. So the
processes of a host, of a whole harness, or of a crashed earlier run are found by scanning
``/proc``, without trusting a recorded pid that may have been reused.

Stopping a host is one SIGKILL to its init, PID 1 of the host's PID namespace: the kernel then
kills every other process in that namespace at once (sshd, Ray, anything started over SSH), and
the init only finishes dying once they are all gone. That is the "VM lost power" of the harness.

Zombies: the processes the harness starts are children of the Python process that called ``up``
or ``restart``; they are kept in a registry here and reaped after each stop. When that process
has exited (the CLI), they are re-parented to PID 1 of this machine, and reaping them is up to
it (systemd, tini and ``docker --init`` do; an init that does not leaves ``<defunct>`` entries).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

from tests.harness.model import HarnessError

MARK = "--harness-host="

# Host processes started by this Python process, reaped after a stop so none stays a zombie.
_started: dict[int, subprocess.Popen] = {}


def marker(prefix: str, name: str) -> str:
    return f"{MARK}{prefix}:{name}"


def register(process: subprocess.Popen) -> None:
    _started[process.pid] = process


def reap() -> None:
    for pid, process in list(_started.items()):
        if process.poll() is not None:
            del _started[pid]


@dataclass(frozen=True)
class Proc:
    pid: int
    host: str
    is_init: bool  # PID 1 of the host's PID namespace (the others are its waiting parents)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:  # the process exited while we looked: not ours to worry about
        return None


def alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (a zombie runs nothing and holds no port)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return False
    state = stat.rsplit(b")", 1)[1].split()[0]
    return state not in (b"Z", b"X")


def _is_namespace_init(pid: int) -> bool:
    status = _read(f"/proc/{pid}/status") or b""
    for line in status.splitlines():
        if line.startswith(b"NSpid:"):
            ids = line.split()[1:]
            return len(ids) > 1 and ids[-1] == b"1"
    return False


def scan(prefix: str) -> list[Proc]:
    """Every live process of this prefix's hosts."""
    found = []
    head = f"{MARK}{prefix}:".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        cmdline = _read(f"/proc/{entry}/cmdline")
        if not cmdline or head not in cmdline:
            continue
        for arg in cmdline.split(b"\0"):
            if arg.startswith(head) and alive(int(entry)):
                host = arg[len(head):].decode(errors="replace")
                found.append(Proc(int(entry), host, _is_namespace_init(int(entry))))
                break
    return found


def init_pid(prefix: str, name: str) -> int | None:
    """The pid (on this machine) of the host's init, or None when the host is down."""
    for proc in scan(prefix):
        if proc.host == name and proc.is_init:
            return proc.pid
    return None


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def pids_in_namespace(namespace: str) -> list[int]:
    """Live pids (as seen from this machine) of every process in a PID namespace."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_namespace(int(entry)) == namespace and alive(int(entry)):
            pids.append(int(entry))
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _start_time(pid: int) -> bytes | None:
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(b")", 1)[1].split()[19] if stat else None


def stop(prefix: str, names: set[str] | None = None, *, keep: set[str] = frozenset(),
         timeout: float = 10.0) -> None:
    """SIGKILL the hosts ``names`` (default: every host of the prefix, except ``keep``) and wait
    until none of their processes is left."""
    def chosen() -> list[Proc]:
        return [p for p in scan(prefix)
                if (names is None or p.host in names) and p.host not in keep]

    # Waited for by pid (and start time, against pid reuse), not by re-scanning for the marker:
    # a dying init loses its cmdline long before it is dead, while the kernel is still killing
    # the rest of its namespace.
    pending: dict[int, bytes | None] = {}
    deadline = time.monotonic() + timeout
    while True:
        # Inits first: killing a waiting `unshare` parent first would not stop the host. Found
        # again each round: a racing restart may have started one after the first scan.
        for proc in sorted(chosen(), key=lambda p: not p.is_init):
            if proc.pid not in pending:
                pending[proc.pid] = _start_time(proc.pid)
                _kill(proc.pid)
        reap()
        pending = {pid: started for pid, started in pending.items()
                   if alive(pid) and _start_time(pid) == started}
        if not pending:
            return
        if time.monotonic() > deadline:
            pids = " ".join(map(str, pending))
            raise HarnessError(f"processes of hosts of {prefix!r} survived SIGKILL for "
                               f"{timeout:g}s (pids {pids}); check `ps -o pid,stat,args -p "
                               f"{pids.replace(' ', ',')}` and kill them by pid")
        time.sleep(0.01)

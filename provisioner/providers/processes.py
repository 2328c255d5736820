"""Find and stop the processes of one local Ray, read straight from ``/proc`` (Linux only).

A local Ray head is started in a new session (``start_new_session=True``), so its daemons (GCS,
raylet, dashboard and its module processes, monitor, log monitor, client server, agents) share one
process group whose id we record. Ray's workers and actors (ServeController, ProxyActor, replicas)
are children of the raylet in process groups of their own, so they are found by walking parent
links down from the group. A worker whose raylet already died is reparented (to init), so a last
sweep also takes any process whose command line, stdout/stderr or working directory lies under the
Ray's temp dir: Ray sends every worker's output to ``<temp>/session_*/logs``.

Order matters for speed: SIGTERM to everything at once leaves ``gcs_server`` and the autoscaler
monitor waiting on each other for 15 s or more (measured on Ray 2.60), while raylet and workers
first, then the other daemons, then GCS last exits in about one second. :func:`stop_ray` does that.

Nothing here ever touches a process that is not tied to the temp dir it is given: a process group
counts only when one of its members mentions that temp dir (a guard against a reused group id), and
``ray stop`` (which stops *every* Ray on the machine) is never used.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str


def read_stat(pid: int) -> ProcInfo | None:
    """Parent, process group and state of ``pid``; None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return ProcInfo(pid, int(fields[1]), int(fields[2]), fields[0])
    except (IndexError, ValueError):
        return None


def snapshot() -> dict[int, ProcInfo]:
    """Every live (non-zombie) process on the machine."""
    table: dict[int, ProcInfo] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = read_stat(int(entry.name))
            if info is not None and info.state not in ("Z", "X"):
                table[info.pid] = info
    return table


def is_alive(pid: int) -> bool:
    info = read_stat(pid)
    return info is not None and info.state not in ("Z", "X")


def _under(text: str, temp_dir: str) -> bool:
    # "--temp-dir=/tmp/x" and "/tmp/x/session/logs" mention /tmp/x; "/tmp/xy" does not.
    return (temp_dir.rstrip("/") + "/") in (text + "/")


def mentions(pid: int, temp_dir: str) -> bool:
    """Whether the command line, stdout/stderr or working directory of ``pid`` is under
    ``temp_dir``."""
    base = PROC / str(pid)
    try:
        args = (base / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if any(_under(arg.decode(errors="replace"), temp_dir) for arg in args if arg):
        return True
    for link in ("fd/1", "fd/2", "cwd"):
        try:
            if _under(os.readlink(base / link), temp_dir):
                return True
        except OSError:
            continue
    return False


def group_members(pgid: int, table: dict[int, ProcInfo] | None = None) -> set[int]:
    table = snapshot() if table is None else table
    return {pid for pid, info in table.items() if info.pgid == pgid}


def group_alive(pgid: int | None, temp_dir: str) -> bool:
    """Whether a process of group ``pgid`` is alive and tied to ``temp_dir``."""
    if not pgid:
        return False
    return any(mentions(pid, temp_dir) for pid in group_members(pgid))


def descendants(roots: Iterable[int], table: dict[int, ProcInfo]) -> set[int]:
    """``roots`` and all their descendants by parent links."""
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: set[int] = set()
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def ray_processes(pgid: int | None, temp_dir: str) -> set[int]:
    """Every process of the Ray whose temp dir is ``temp_dir``: its process group (when a member
    mentions the temp dir), every process mentioning the temp dir, and all their descendants."""
    table = snapshot()
    own = os.getpid()
    roots: set[int] = set()
    if pgid:
        members = group_members(pgid, table)
        if any(mentions(pid, temp_dir) for pid in members):
            roots |= members
    roots |= {pid for pid in table if pid not in roots and mentions(pid, temp_dir)}
    roots.discard(own)
    found = descendants(roots, table)
    found.discard(own)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pids: Iterable[int]) -> None:
    """Collect the exit status of those that are our own children (others are reaped by their
    parent or init)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except (ChildProcessError, OSError):
            pass


def terminate_tree(pids: Iterable[int], grace_s: float = 15.0, poll_s: float = 0.2) -> set[int]:
    """SIGTERM every pid, wait up to ``grace_s`` for them to exit, SIGKILL the rest and wait a
    little more. Returns the pids still alive (empty on success)."""
    pending = {pid for pid in pids if pid != os.getpid()}
    for pid in pending:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while True:
        _reap(pending)
        pending = {pid for pid in pending if is_alive(pid)}
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    if pending:
        for pid in pending:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while pending and time.monotonic() < deadline:
            _reap(pending)
            pending = {pid for pid in pending if is_alive(pid)}
            if pending:
                time.sleep(0.05)
    return pending


def command_name(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def stop_ray(pgid: int | None, temp_dir: str, grace_s: float = 15.0) -> set[int]:
    """Stop every process of the Ray whose temp dir is ``temp_dir`` (see :func:`ray_processes`):
    raylet and its workers first, then the other daemons, then GCS, each SIGTERM'd and SIGKILL'd
    once the shared ``grace_s`` is spent. Returns the pids that survived (empty on success)."""
    deadline = time.monotonic() + grace_s
    survivors: set[int] = set()
    for _ in range(3):  # a later scan catches what was started while we stopped the rest
        found = ray_processes(pgid, temp_dir)
        if not found:
            return set()
        table = snapshot()
        raylets = {pid for pid in found if command_name(pid) == "raylet"}
        first = descendants(raylets, table) & found
        last = {pid for pid in found if command_name(pid) == "gcs_server"} - first
        middle = found - first - last
        survivors = set()
        for stage in (first, middle, last):
            if stage:
                remaining = max(deadline - time.monotonic(), 0.5)
                survivors |= terminate_tree(stage, grace_s=remaining)
    return survivors | ray_processes(pgid, temp_dir)

"""Pure readers of what HAProxy 2.6 and the ``haproxy_lb`` helper print (no I/O here).

Each takes the text of one command's output and returns plain data; they are tested against
outputs recorded from a real HAProxy 2.6.12 (``tests/haproxy/fixtures/``).

- ``show stat`` (stats socket): CSV, first line ``# pxname,svname,...``; one row per frontend,
  server and backend. See https://docs.haproxy.org/2.6/management.html#9.1.
- ``show proc`` (master socket)::

      #<PID>          <type>          <reloads>       <uptime>        <version>
      20825           master          1 [failed: 0]   0d00h02m07s     2.6.12-1+deb12u3
      # workers
      20830           worker          0               0d00h00m01s     2.6.12-1+deb12u3
      # old workers
      20826           worker          1               0d00h02m07s     2.6.12-1+deb12u3
      # programs

- the master's log (its stderr, ``haproxy.log``): each load ends with ``Loading success.`` or
  ``Loading failure!``; the reason of a failure is in the ``[ALERT]`` lines before it.
- ``show servers state`` (stats socket): a version line ``1``, a ``# be_id be_name ...`` header,
  then one space-separated line per server: what the next worker starts from after a reload.
- the helper's ``inventory``: one JSON object per line, one per resource directory.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

BACKEND = "serve_proxies"
LOAD_SUCCESS = "Loading success."
LOAD_FAILURE = "Loading failure!"


@dataclass(frozen=True)
class ServerHealth:
    """One backend server as ``show stat`` reports it."""

    name: str
    address: str
    status: str  # UP, DOWN, MAINT, "UP 1/2" (going down), "DOWN 1/2" (going up), no check ...
    check_status: str  # L7OK, L7STS (bad status), L4CON (refused), L4TOUT, ...
    check_code: int | None
    check_desc: str  # "Layer7 wrong status: Service Unavailable"
    last_change_s: int | None
    current_sessions: int
    total_sessions: int

    @property
    def in_rotation(self) -> bool:
        """Whether HAProxy sends new requests to it (UP, or UP and failing checks so far)."""
        return self.status.startswith("UP") or self.status == "no check"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "status": self.status,
                "in_rotation": self.in_rotation, "check_status": self.check_status,
                "check_code": self.check_code, "check_desc": self.check_desc,
                "last_change_s": self.last_change_s, "current_sessions": self.current_sessions,
                "total_sessions": self.total_sessions}


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def parse_show_stat(text: str, backend: str = BACKEND) -> list[ServerHealth]:
    """The servers of ``backend`` (sorted by name) from ``show stat`` CSV."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not the output of `show stat` (no '# pxname,...' header)")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    servers = []
    for row in reader:
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        servers.append(ServerHealth(
            name=row["svname"],
            address=row.get("addr") or "",
            status=row.get("status") or "",
            check_status=(row.get("check_status") or "").lstrip("* "),
            check_code=_int(row.get("check_code")),
            check_desc=": ".join(part for part in (row.get("check_desc"), row.get("last_chk"))
                                  if part),
            last_change_s=_int(row.get("lastchg")),
            current_sessions=_int(row.get("scur")) or 0,
            total_sessions=_int(row.get("stot")) or 0,
        ))
    return sorted(servers, key=lambda server: server.name)


@dataclass(frozen=True)
class Process:
    pid: int
    kind: str  # master, worker, or a program's name
    reloads: int


@dataclass(frozen=True)
class ProcTable:
    """``show proc``: the master, the current workers and the old ones still finishing."""

    master_pid: int
    reloads: int
    failed_reloads: int
    workers: tuple[Process, ...]
    old_workers: tuple[Process, ...]

    @property
    def worker_pids(self) -> tuple[int, ...]:
        return tuple(process.pid for process in self.workers)


def parse_show_proc(text: str) -> ProcTable:
    master: tuple[int, int, int] | None = None
    section = "master"
    found: dict[str, list[Process]] = {"workers": [], "old workers": []}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#<PID>") or not stripped:
            continue
        if stripped.startswith("#"):
            section = stripped.lstrip("# ").strip()
            continue
        fields = stripped.split()
        if len(fields) < 3 or not fields[0].isdigit() or not fields[2].isdigit():
            raise ValueError(f"unexpected line in `show proc`: {line!r}")
        if fields[1] == "master":
            failed = 0
            if "[failed:" in stripped:
                failed = _int(stripped.split("[failed:", 1)[1].split("]", 1)[0].strip()) or 0
            master = (int(fields[0]), int(fields[2]), failed)
        elif section in found:
            found[section].append(Process(int(fields[0]), fields[1], int(fields[2])))
    if master is None:
        raise ValueError("not the output of `show proc` (no master line)")
    return ProcTable(master[0], master[1], master[2], tuple(found["workers"]),
                     tuple(found["old workers"]))


@dataclass(frozen=True)
class LoadOutcome:
    """How the last (re)load in a piece of the master's log ended: ``ok`` True/False, or None
    when it has not ended yet; ``alerts`` are HAProxy's own reasons."""

    ok: bool | None
    alerts: tuple[str, ...]


def load_outcome(log: str) -> LoadOutcome:
    ok: bool | None = None
    lines: list[str] = []
    for line in log.splitlines():
        if LOAD_SUCCESS in line:
            ok, lines = True, []
        elif LOAD_FAILURE in line:
            ok = False
        else:
            lines.append(line)
    return LoadOutcome(ok, alerts("\n".join(lines)) if ok is False else ())


def alerts(output: str) -> tuple[str, ...]:
    """HAProxy's ``[ALERT]`` lines (its reasons for refusing a config), without the pid:
    ``[ALERT]    (22751) : config : [x.cfg:10] : ...`` -> ``[ALERT] config : [x.cfg:10] : ...``."""
    found = []
    for line in output.splitlines():
        if "[ALERT]" in line:
            head, sep, rest = line.partition(") : ")
            found.append(f"[ALERT] {rest.strip()}" if sep else line.strip())
    return tuple(found)


def carry_server_states(dump: str, backends: Sequence[Mapping[str, Any]],
                        backend: str = BACKEND) -> str:
    """The lines of a ``show servers state`` dump the next worker may start from: only servers
    that keep their name, address and port in the new config. HAProxy 2.6 applies a saved
    ``srv_port`` over the config's port (measured: a server moved from port A to port B kept
    sending to A after a reload), so a server whose address or port changed must start afresh.
    """
    lines = dump.splitlines()
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# be_id "):
        return ""
    columns = lines[1][2:].split()
    wanted = {str(b["name"]): (str(b["address"]), str(b["port"])) for b in backends}
    kept = [lines[0], lines[1]]
    for line in lines[2:]:
        row = dict(zip(columns, line.split()))
        place = wanted.get(row.get("srv_name", ""))
        if row.get("be_name") != backend or place is None:
            continue
        address, port = place
        if address in (row.get("srv_addr"), row.get("srv_fqdn")) and port == row.get("srv_port"):
            kept.append(line)
    return "\n".join(kept) + "\n"


@dataclass(frozen=True)
class DirEntry:
    """One ``<node_dir>/haproxy/<name>`` directory: its marker, master pid, liveness and the
    digest of the config in place."""

    dir: str
    owner: dict[str, Any] | None
    pid: int | None
    alive: bool
    digest: str | None


def parse_inventory(text: str) -> list[DirEntry]:
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        try:
            owner = json.loads(item["owner"]) if item.get("owner") else None
        except ValueError:
            owner = None  # an interrupted marker write leaves no partial owner.json, but be safe
        entries.append(DirEntry(item["dir"], owner if isinstance(owner, dict) else None,
                                item.get("pid"), bool(item.get("alive")), item.get("digest")))
    return entries

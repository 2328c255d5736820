"""What the harness hands out and what it writes down.

- :class:`HostInfo` / :class:`HarnessInfo`: the answer of ``up``/``restart``/``info`` (addresses,
  the client key, the pre-seeded known_hosts file), plus small helpers that build SSH targets and
  ``ssh`` command lines that always verify host keys.
- :class:`Record`: the JSON file under the harness root that says what is up, so that ``down``,
  ``kill`` or ``info`` from another process (the CLI) act on the same hosts.
- :class:`HarnessError`: the one error the harness raises; its message names the host and says
  what to do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tests.harness.hosts import Harness

RECORD_VERSION = 1


class HarnessError(RuntimeError):
    """Something about the test hosts failed; the message says which host and why."""


@dataclass(frozen=True)
class HostInfo:
    name: str
    address: str
    # The host's public key as "ssh-ed25519 AAAA..." (no comment): what a client pins.
    host_key: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address}


@dataclass(frozen=True)
class HarnessInfo:
    hosts: tuple[HostInfo, ...]
    user: str
    key_file: str
    known_hosts: str
    root: str
    # This machine's address on the bridge: the only address outside the hosts they can reach.
    gateway: str
    # The live harness (kill/restart/exec); not part of the data, so not compared or printed.
    harness: "Harness | None" = field(default=None, repr=False, compare=False)

    def host(self, name: str) -> HostInfo:
        for host in self.hosts:
            if host.name == name:
                return host
        raise HarnessError(f"no host named {name!r} (hosts: {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.hosts]

    def address(self, name: str) -> str:
        return self.host(name).address

    def ssh_target(self, name: str) -> dict[str, Any]:
        """The SSH target mapping of ``provisioner.remote.connect`` for one host."""
        host = self.host(name)
        return {"address": host.address, "port": 22, "user": self.user,
                "key_file": self.key_file, "host_key": host.host_key}

    def ssh_command(self, name: str, *command: str, known_hosts: str | None = None) -> list[str]:
        """``ssh`` argv that logs into ``name`` with the harness key and verifies its host key
        against ``known_hosts`` (default: the harness's current file). ``-F /dev/null`` keeps the
        user's own ssh config out of tests."""
        return ["ssh", "-F", "/dev/null", "-i", self.key_file, "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR", f"{self.user}@{self.address(name)}", *command]

    def to_json(self, *, known_hosts: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"hosts": [host.to_json() for host in self.hosts],
                                "user": self.user, "key_file": self.key_file}
        if known_hosts:
            data["known_hosts"] = self.known_hosts
        return data


@dataclass
class Record:
    """What is up: host name -> address (in ``up`` order), and the mount points the harness had
    to create on this machine (removed again by ``down`` when empty)."""

    prefix: str
    subnet: str
    hosts: dict[str, str] = field(default_factory=dict)
    created_dirs: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> "Record | None":
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise HarnessError(f"{path} is not valid JSON ({exc}); run `python -m tests.harness "
                               "down` to clean up by name") from exc
        return cls(prefix=data["prefix"], subnet=data["subnet"], hosts=dict(data["hosts"]),
                   created_dirs=list(data.get("created_dirs", [])))

    def write(self, path: Path) -> None:
        # Atomic replace: a `down` in another process never reads half a record.
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps({"version": RECORD_VERSION, "prefix": self.prefix,
                                    "subnet": self.subnet, "hosts": self.hosts,
                                    "created_dirs": self.created_dirs}, indent=2) + "\n")
        os.replace(temp, path)

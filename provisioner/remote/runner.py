"""Running commands and writing files on a machine: this one (:class:`LocalRunner`) or a host
reached over SSH (``provisioner.remote.ssh.SSHRunner``). Resource types that act on machines
(Ray nodes, HAProxy) are written against :class:`Runner` only, so the same code drives a host
of the namespace test harness, a VM, or this machine.

Contract:
- ``run(command, timeout, check, stdin)`` runs a shell command (``sh -c``) and returns its exit
  code and output. ``check=True`` raises :class:`CommandFailed` (a ``ProviderError``) on a
  non-zero exit, naming the host, the command and the end of stderr. A command that outlives
  ``timeout`` is killed and raises ``CommandFailed`` too.
- ``put(path, data, mode)`` writes a file atomically (temp file in the same directory, then
  rename), creating parent directories; readers never see a half-written file.
- ``read(path)`` returns the bytes of a file, or ``None`` when it does not exist.
Secrets never appear in the error messages: callers pass them through ``stdin`` or ``put``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from provisioner.errors import ProviderError


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


class CommandFailed(ProviderError):
    def __init__(self, host: str, command: str, result: CommandResult | None, why: str = ""):
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:] if result else []
        detail = why or f"exit code {result.exit_code if result else '?'}"
        message = f"on {host}: `{_short(command)}` failed ({detail})"
        if tail:
            message += ":\n    " + "\n    ".join(tail)
        super().__init__(message)
        self.host = host
        self.command = command
        self.result = result


def json_object(raw: bytes | str | None) -> dict:
    """A JSON object read from a machine (a marker file), or {} when missing or unreadable: a
    marker that does not parse marks nothing as ours."""
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _short(command: str, limit: int = 120) -> str:
    command = " ".join(command.split())
    return command if len(command) <= limit else command[: limit - 3] + "..."


@runtime_checkable
class Runner(Protocol):
    """See the module docstring."""

    host: str

    def run(self, command: str, *, timeout: float = 120.0, check: bool = True,
            stdin: bytes | None = None) -> CommandResult: ...

    def put(self, path: str, data: bytes, *, mode: int = 0o644) -> None: ...

    def read(self, path: str) -> bytes | None: ...

    def readlink(self, path: str) -> str | None: ...


class LocalRunner:
    """This machine. See the module docstring for the contract."""

    host = "localhost"

    def run(self, command: str, *, timeout: float = 120.0, check: bool = True,
            stdin: bytes | None = None) -> CommandResult:
        try:
            done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandFailed(self.host, command, None, f"timed out after {timeout:g}s")
        result = CommandResult(done.returncode, done.stdout.decode(errors="replace"),
                               done.stderr.decode(errors="replace"))
        if check and result.exit_code != 0:
            raise CommandFailed(self.host, command, result)
        return result

    def put(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(path)
        except (FileNotFoundError, OSError):
            return None

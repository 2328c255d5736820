"""A :class:`~provisioner.remote.runner.Runner` for hosts reached over SSH (paramiko).

Imported only when a resource's target is an SSH host (see ``provisioner.remote.connect``), so
paramiko is imported here at module level. The pieces:

- ``ssh_target``  — :class:`SSHTarget` (where, who, which host key) and :class:`HostKey`;
- ``ssh_errors``  — :class:`SSHConnectionError` and its subclasses, the one readable error for
  paramiko's many;
- ``ssh_connect`` — :func:`scan_host_key`, host key verification, authentication, bounded
  retries, and the process-wide :class:`ConnectionPool`;
- ``ssh_tunnel``  — local port forwarding for :meth:`SSHRunner.tunnel`;
- this module     — :class:`SSHRunner` (run / put / read / tunnel) and :func:`runner_for_target`.

Host keys: the runner connects only to a host whose key is recorded (``target.host_key``, or an
entry of ``target.known_hosts``) and checks it before authenticating. First contact goes through
:func:`scan_host_key`, whose result the caller records in state; the plan shows its fingerprint.

Commands: the SSH protocol hands the command string to the remote user's login shell; the runner
sends ``echo <pid marker>; exec sh -c '<command>'``, so the command itself runs under ``sh -c``
like :class:`~provisioner.remote.runner.LocalRunner`, and the runner learns the process group to
kill on timeout (sshd makes each session's process a session and group leader). A command that
leaves a background process holding stdout/stderr open keeps the session open until it exits
(as with ``ssh host 'cmd &'``): redirect the output of daemons.
"""

from __future__ import annotations

import atexit
import logging
import posixpath
import re
import secrets
import shlex
import stat
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import paramiko

from provisioner.errors import ProviderError
from provisioner.remote.runner import CommandFailed, CommandResult
from provisioner.remote.ssh_connect import (
    DEFAULT_RETRY,
    MAX_SESSIONS_PER_CONNECTION,
    ConnectionPool,
    RetryPolicy,
    connect,
    expected_host_keys,
    scan_host_key,
)
from provisioner.remote.ssh_errors import (
    HostKeyMismatch,
    HostKeyNotRecorded,
    SSHAuthenticationError,
    SSHConnectionError,
    SSHNetworkError,
)
from provisioner.remote.ssh_target import HostKey, SSHTarget, fingerprint
from provisioner.remote.ssh_tunnel import Forwarder

__all__ = [
    "ConnectionPool", "DEFAULT_POOL", "DEFAULT_RETRY", "HostKey", "HostKeyMismatch",
    "HostKeyNotRecorded", "MAX_SESSIONS_PER_CONNECTION", "RetryPolicy", "SSHAuthenticationError",
    "SSHConnectionError", "SSHNetworkError", "SSHRunner", "SSHTarget", "close_all", "connect",
    "expected_host_keys", "fingerprint", "runner_for_target", "scan_host_key",
]

log = logging.getLogger(__name__)

DEFAULT_POOL = ConnectionPool()
atexit.register(DEFAULT_POOL.close_all)  # paramiko's transport threads can hang interpreter exit

_PID_MARK = "__provisioner_pid__"
_PID_LINE = re.compile(rb"(?:^|\n)" + _PID_MARK.encode() + rb"(\d+)\n")
_CHUNK = 65536
_KILL_GRACE_S = 1
_FILE_ERRORS = (OSError, EOFError, paramiko.SSHException, paramiko.sftp.SFTPError)


def close_all() -> None:
    """Close every pooled connection of the process-wide pool."""
    DEFAULT_POOL.close_all()


def runner_for_target(mapping: Mapping[str, Any], *, resource_address: str | None = None) -> SSHRunner:
    """The runner for a resource's ``target`` mapping (see ``provisioner.remote.connect``)."""
    return SSHRunner(SSHTarget.from_mapping(mapping), resource_address=resource_address)


class SSHRunner:
    """A host over SSH. See ``provisioner.remote.runner`` for the contract; the module docstring
    for how commands are run and host keys checked. ``resource_address`` (e.g. ``ssh_host.web``)
    names the resource in errors and in the fix for a changed host key."""

    def __init__(self, target: SSHTarget, *, resource_address: str | None = None,
                 pool: ConnectionPool | None = None) -> None:
        self.target = target
        self.resource_address = resource_address
        self._conn = target.resolved()
        self._pool = pool or DEFAULT_POOL
        self.host = self._conn.display

    # --- run ------------------------------------------------------------------------------

    def run(self, command: str, *, timeout: float | None = None, check: bool = True,
            stdin: bytes | None = None) -> CommandResult:
        timeout = self._conn.command_timeout_s if timeout is None else timeout
        wrapped = f"echo {_PID_MARK}$$; exec sh -c {shlex.quote(command)}"
        with self._pool.session(self._conn, resource_address=self.resource_address) as channel:
            try:
                channel.exec_command(wrapped)
            except (OSError, EOFError, paramiko.SSHException):
                raise SSHNetworkError(self._conn, f"the server did not start `{_short(command)}`",
                                      address=self.resource_address) from None
            out, err, code, finished = _collect(channel, stdin, timeout)
            pid, stdout = _split_pid(bytes(out))
            result = CommandResult(code, stdout.decode(errors="replace"),
                                   bytes(err).decode(errors="replace"))
            if not finished:
                self._kill(pid)
                channel.close()
                raise CommandFailed(self.host, command, result, f"timed out after {timeout:g}s")
            if code == -1 and not channel.get_transport().is_active():
                raise SSHNetworkError(
                    self._conn, f"the connection was lost while running `{_short(command)}`; it "
                    "may or may not have completed", address=self.resource_address)
        if check and result.exit_code != 0:
            raise CommandFailed(self.host, command, result)
        return result

    def _kill(self, pid: int | None) -> None:
        """Kill the timed-out command's process group, through a second session (best effort)."""
        if pid is None:
            return
        script = (f"kill -TERM -- -{pid} 2>/dev/null; sleep {_KILL_GRACE_S}; "
                  f"kill -KILL -- -{pid} 2>/dev/null; true")
        try:
            transport = self._pool.transport(self._conn, resource_address=self.resource_address)
            channel = transport.open_session(timeout=self._conn.connect_timeout_s)
            try:
                channel.exec_command(script)
                channel.shutdown_write()
                channel.status_event.wait(_KILL_GRACE_S + self._conn.connect_timeout_s)
            finally:
                channel.close()
        except (SSHConnectionError, OSError, EOFError, paramiko.SSHException) as exc:
            log.debug("could not kill timed-out command on %s: %s", self.host, exc)

    # --- files ----------------------------------------------------------------------------

    def put(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` atomically: a hidden temp file in the same directory,
        created exclusively and chmod-ed before any data is written, then renamed over ``path``
        (``posix-rename@openssh.com``, which replaces an existing file)."""
        directory, name = posixpath.split(path)
        temp = posixpath.join(directory, f".{name}.tmp-{secrets.token_hex(6)}")
        with self._pool.sftp(self._conn, resource_address=self.resource_address) as sftp:
            try:
                _makedirs(sftp, directory)
                with sftp.open(temp, "wbx") as handle:
                    handle.chmod(mode)
                    handle.set_pipelined(True)
                    handle.write(data)
                sftp.posix_rename(temp, path)
            except _FILE_ERRORS as exc:
                _remove_quietly(sftp, temp)
                raise self._file_error(sftp, "write", path, exc) from None
            except BaseException:
                _remove_quietly(sftp, temp)
                raise

    def read(self, path: str) -> bytes | None:
        with self._pool.sftp(self._conn, resource_address=self.resource_address) as sftp:
            try:
                with sftp.open(path, "rb") as handle:
                    handle.prefetch()
                    return handle.read()
            except FileNotFoundError:
                return None
            except _FILE_ERRORS as exc:
                raise self._file_error(sftp, "read", path, exc) from None

    def readlink(self, path: str) -> str | None:
        """Where the symlink ``path`` points; None if it is missing or not a link."""
        with self._pool.sftp(self._conn, resource_address=self.resource_address) as sftp:
            try:
                return sftp.readlink(path)
            except (FileNotFoundError, paramiko.sftp.SFTPError):
                return None
            except _FILE_ERRORS as exc:
                raise self._file_error(sftp, "read the link", path, exc) from None

    def _file_error(self, sftp: paramiko.SFTPClient, verb: str, path: str,
                    exc: BaseException) -> ProviderError:
        transport = sftp.get_channel().get_transport()
        if isinstance(exc, (EOFError, paramiko.SSHException)) or not transport.is_active():
            return SSHNetworkError(self._conn, f"the connection was lost while {verb[:-1]}ing {path}",
                                   address=self.resource_address)
        why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
        return ProviderError(f"on {self.host}: cannot {verb} {path}: {why}", address=self.resource_address)

    # --- tunnel ---------------------------------------------------------------------------

    @contextmanager
    def tunnel(self, remote_host: str, remote_port: int, *, local_port: int = 0) -> Iterator[int]:
        """Forward ``127.0.0.1:<yielded port>`` to ``remote_host:remote_port`` as the SSH host
        sees it; every connection and the listener are closed on exit."""
        forwarder = Forwarder(self._pool, self._conn, remote_host, remote_port,
                              local_port=local_port, resource_address=self.resource_address)
        try:
            forwarder.start()
            yield forwarder.port
        finally:
            forwarder.close()


def _collect(channel: paramiko.Channel, stdin: bytes | None, timeout: float):
    """Feed stdin and read stdout and stderr to the end, each in its own thread, so a command
    that writes much before reading (or fills stderr while we read stdout) cannot deadlock.
    Returns ``(stdout, stderr, exit_code, finished)``; ``finished`` is False on timeout."""
    out, err = bytearray(), bytearray()

    def drain(recv, sink: bytearray) -> None:
        try:
            while chunk := recv(_CHUNK):
                sink += chunk
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def feed() -> None:
        try:
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited without reading all of it, as a pipe would

    threads = [threading.Thread(target=drain, args=(channel.recv, out), daemon=True),
               threading.Thread(target=drain, args=(channel.recv_stderr, err), daemon=True)]
    if stdin:
        threads.append(threading.Thread(target=feed, daemon=True))
    else:
        feed()  # EOF at once: a command reading stdin must not wait for us
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads[:2]:
        thread.join(max(0.0, deadline - time.monotonic()))
    finished = not any(t.is_alive() for t in threads[:2]) and \
        channel.status_event.wait(max(0.0, deadline - time.monotonic()))
    code = channel.exit_status if finished else -1
    return out, err, code, finished


def _split_pid(stdout: bytes) -> tuple[int | None, bytes]:
    """Take the wrapper's pid line (and anything a login script printed before it) off stdout."""
    match = _PID_LINE.search(stdout)
    if not match:
        return None, stdout
    return int(match.group(1)), stdout[match.end():]


def _makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    """``mkdir -p``: create the missing ancestors, tolerating a concurrent creator."""
    missing = []
    current = directory
    while current and current not in ("/", "."):
        try:
            if not stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                raise NotADirectoryError(20, "Not a directory", current)
            break
        except FileNotFoundError:
            missing.append(current)
            current = posixpath.dirname(current)
    for path in reversed(missing):
        try:
            sftp.mkdir(path)
        except OSError:
            if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                raise


def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.remove(path)
    except (OSError, EOFError, paramiko.SSHException):
        pass


def _short(command: str, limit: int = 80) -> str:
    command = " ".join(command.split())
    return command if len(command) <= limit else command[: limit - 3] + "..."

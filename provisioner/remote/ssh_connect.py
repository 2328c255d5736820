"""Opening SSH connections: host key scan and verification, authentication, retries, and the
process-wide :class:`ConnectionPool` that lets every resource on a host share one connection.

The connection is built from a paramiko ``Transport`` directly rather than ``SSHClient``, so the
host key check is ours and runs before any authentication: a host that presents another key
than the recorded one never sees our key, and never runs a command.

Retries (tenacity, exponential backoff with jitter) cover connection-level failures only:
refused, timed out, reset, unreachable, a handshake cut short. Authentication and host key
failures are raised at once; a command's exit code is never retried here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator

import paramiko
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from provisioner.remote.ssh_errors import (
    HostKeyMismatch,
    HostKeyNotRecorded,
    SSHAuthenticationError,
    SSHConnectionError,
    SSHNetworkError,
    translate,
)
from provisioner.remote.ssh_target import HostKey, SSHTarget

log = logging.getLogger(__name__)

# OpenSSH's sshd allows MaxSessions (default 10) open sessions per connection; exec and sftp
# channels count, direct-tcpip (tunnel) channels do not. Stay under it so parallel resources on one
# host wait for a slot instead of being refused ("administratively prohibited").
# https://man.openbsd.org/sshd_config#MaxSessions
MAX_SESSIONS_PER_CONNECTION = 8
DEFAULT_KEY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
KEEPALIVE_S = 30


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded connect retries: ``attempts`` tries, waits growing from ``initial_s`` to ``max_s``."""

    attempts: int = 4
    initial_s: float = 0.25
    max_s: float = 2.0
    jitter_s: float = 0.25

    def retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.attempts),
            # (wait_exponential + wait_random rather than wait_exponential_jitter, whose
            # arguments changed between tenacity 8 and 9)
            wait=wait_exponential(multiplier=self.initial_s, max=self.max_s)
            + wait_random(0, self.jitter_s),
            retry=retry_if_exception_type(SSHNetworkError),
            reraise=True,
        )


DEFAULT_RETRY = RetryPolicy()


def with_retries(policy: RetryPolicy, what: str, action):
    """Run ``action`` under ``policy``; the final network error says how many tries were made."""
    attempt = 0
    try:
        for attempt_ctx in policy.retrying():
            with attempt_ctx:
                attempt += 1
                return action()
    except SSHNetworkError as exc:
        if attempt > 1:
            exc.message = f"{exc.message} (after {attempt} attempts)"
            exc.args = (exc.message,)
        log.debug("%s failed: %s", what, exc.message)
        raise


# --- host keys ------------------------------------------------------------------------------

def _open_socket(target: SSHTarget) -> socket.socket:
    return socket.create_connection((target.address, target.port), timeout=target.connect_timeout_s)


def _start_transport(target: SSHTarget, preferred_types: list[str]) -> paramiko.Transport:
    sock = _open_socket(target)
    try:
        transport = paramiko.Transport(sock)
    except BaseException:
        sock.close()
        raise
    transport.banner_timeout = target.connect_timeout_s
    transport.handshake_timeout = target.connect_timeout_s
    transport.auth_timeout = target.connect_timeout_s
    transport.channel_timeout = target.connect_timeout_s
    if preferred_types:
        # Ask for the recorded key's type first, or a host with several keys may show another
        # (OpenSSH does the same from known_hosts). RSA keys are named ssh-rsa but negotiated
        # as rsa-sha2-*.
        options = transport.get_security_options()
        wanted: list[str] = []
        for key_type in preferred_types:
            wanted += ["rsa-sha2-512", "rsa-sha2-256"] if key_type == "ssh-rsa" else [key_type]
        offered = list(options.key_types)
        options.key_types = [t for t in wanted if t in offered] + [t for t in offered if t not in wanted]
    try:
        transport.start_client(timeout=target.connect_timeout_s)
    except BaseException:
        transport.close()
        raise
    return transport


def scan_host_key(target: SSHTarget, *, retry: RetryPolicy = DEFAULT_RETRY) -> HostKey:
    """The key the host presents, without authenticating (first contact: trust on first use).

    The caller records it (the target's ``host_key``) so that every later connection is checked
    against it; the plan shows its fingerprint so a person can compare it with the host's own
    (``ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub``, or the cloud console output).
    """
    target = target.resolved()

    def scan() -> HostKey:
        try:
            transport = _start_transport(target, [])
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise translate(exc, target, key_files=[]) from None
        try:
            return HostKey.from_pkey(transport.get_remote_server_key())
        finally:
            transport.close()

    return with_retries(retry, f"scanning the host key of {target.display}", scan)


def expected_host_keys(target: SSHTarget) -> list[HostKey]:
    """The recorded ``host_key`` plus the host's entries in ``known_hosts``, if given."""
    keys: list[HostKey] = []
    if target.host_key:
        keys.append(HostKey.parse(target.host_key))
    if target.known_hosts:
        path = os.path.expanduser(target.known_hosts)
        try:
            known = paramiko.HostKeys(path)
        except (OSError, paramiko.SSHException) as exc:
            raise SSHConnectionError(target, f"cannot read known_hosts file {path}: {exc}") from None
        names = [target.address] if target.port == 22 else [f"[{target.address}]:{target.port}"]
        for name in names:
            for key in (known.lookup(name) or {}).values():
                keys.append(HostKey.from_pkey(key))
    return keys


def _verify(target: SSHTarget, presented: Any, expected: list[HostKey],
            resource_address: str | None) -> None:
    shown = HostKey.from_pkey(presented)
    if any(k.blob == shown.blob for k in expected):
        return
    raise HostKeyMismatch(target, expected, shown, resource_address=resource_address)


# --- authentication -------------------------------------------------------------------------

def _load_key(target: SSHTarget, path: str, resource_address: str | None) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(os.path.expanduser(path))
    except FileNotFoundError:
        raise SSHAuthenticationError(target, f"the key file {path} does not exist",
                                     address=resource_address) from None
    except PermissionError:
        raise SSHAuthenticationError(target, f"cannot read the key file {path} (permission denied)",
                                     address=resource_address) from None
    except TypeError:
        # cryptography says "Password was not given but private key is encrypted" this way.
        raise translate(paramiko.PasswordRequiredException(), target, key_files=[path],
                        resource_address=resource_address) from None
    except (ValueError, paramiko.SSHException) as exc:
        if isinstance(exc, paramiko.PasswordRequiredException):
            raise translate(exc, target, key_files=[path], resource_address=resource_address) from None
        raise SSHAuthenticationError(target, f"the key file {path} is not a private key "
                                     f"paramiko can read ({type(exc).__name__})",
                                     address=resource_address) from None


def _authenticate(transport: paramiko.Transport, target: SSHTarget,
                  resource_address: str | None) -> None:
    """Log in with ``key_file`` only when given (deterministic); else like ``ssh``: the agent's
    keys, then the default key files (encrypted ones skipped: nothing here asks for passphrases)."""
    if target.key_file:
        candidates = [_load_key(target, target.key_file, resource_address)]
    else:
        candidates = []
        try:
            candidates += list(paramiko.Agent().get_keys())
        except paramiko.SSHException:
            pass
        for path in DEFAULT_KEY_FILES:
            if os.path.exists(os.path.expanduser(path)):
                try:
                    candidates.append(paramiko.PKey.from_path(os.path.expanduser(path)))
                except (OSError, TypeError, ValueError, paramiko.SSHException):
                    continue
    last: Exception = paramiko.AuthenticationException("no usable key")
    for key in candidates:
        try:
            transport.auth_publickey(target.user, key)
        except paramiko.BadAuthenticationType:
            raise
        except paramiko.AuthenticationException as exc:
            last = exc
            continue
        if transport.is_authenticated():
            return
        # The server wants a second factor (AuthenticationMethods publickey,password).
        last = paramiko.AuthenticationException("the server asks for more than a key")
        break
    raise last


def connect(target: SSHTarget, *, resource_address: str | None = None,
            retry: RetryPolicy = DEFAULT_RETRY) -> paramiko.Transport:
    """An authenticated transport to ``target`` (resolved) whose host key was verified."""
    expected = expected_host_keys(target)
    if not expected:
        raise HostKeyNotRecorded(target, address=resource_address)

    def attempt() -> paramiko.Transport:
        key_files = [target.key_file] if target.key_file else []
        try:
            transport = _start_transport(target, [k.type for k in expected])
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise translate(exc, target, key_files=key_files, resource_address=resource_address) from None
        try:
            _verify(target, transport.get_remote_server_key(), expected, resource_address)
            _authenticate(transport, target, resource_address)
        except BaseException as exc:
            transport.close()
            if isinstance(exc, (OSError, EOFError, paramiko.SSHException)):
                raise translate(exc, target, key_files=key_files,
                                resource_address=resource_address) from None
            raise
        transport.set_keepalive(KEEPALIVE_S)
        log.debug("connected to %s", target.display)
        return transport

    if target.connect_attempts < retry.attempts:  # a quick probe: fewer tries than usual
        retry = replace(retry, attempts=target.connect_attempts)
    return with_retries(retry, f"connecting to {target.display}", attempt)


# --- the pool -------------------------------------------------------------------------------

class _Entry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.transport: paramiko.Transport | None = None
        self.sessions = threading.BoundedSemaphore(MAX_SESSIONS_PER_CONNECTION)


class ConnectionPool:
    """One live, authenticated connection per target, shared by every thread of the process.

    ``transport()`` hands out the connection, reconnecting transparently when the previous one
    died; ``session()`` opens a session channel on it (waiting for a free slot, see
    ``MAX_SESSIONS_PER_CONNECTION``). ``connects`` counts the connections made.
    """

    def __init__(self, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self.retry = retry
        self.connects = 0
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], _Entry] = {}

    def _entry(self, target: SSHTarget) -> _Entry:
        with self._lock:
            return self._entries.setdefault(target.connection_key(), _Entry())

    def transport(self, target: SSHTarget, *, resource_address: str | None = None) -> paramiko.Transport:
        entry = self._entry(target)
        with entry.lock:  # per target: a slow host does not hold up the others
            current = entry.transport
            if current is not None and current.is_active():
                return current
            if current is not None:
                log.debug("connection to %s was lost; reconnecting", target.display)
                current.close()
                entry.transport = None
            entry.transport = connect(target, resource_address=resource_address, retry=self.retry)
            with self._lock:
                self.connects += 1
            return entry.transport

    def discard(self, target: SSHTarget, transport: paramiko.Transport) -> None:
        """Drop ``transport`` (found dead) so the next call reconnects."""
        entry = self._entry(target)
        with entry.lock:
            if entry.transport is transport:
                entry.transport = None
        transport.close()

    def open_channel(self, target: SSHTarget, opener, *, resource_address: str | None = None):
        """``opener(transport)`` on the pooled connection; once more on a fresh one if the pooled
        connection turned out dead (nothing ran on it yet, so this is safe to repeat)."""
        for tries_left in (1, 0):
            transport = self.transport(target, resource_address=resource_address)
            try:
                return opener(transport)
            except paramiko.ChannelException as exc:
                if transport.is_active():  # the server refused this channel, not a dead link
                    raise SSHNetworkError(target, f"the server refused a channel ({exc.text})",
                                          address=resource_address) from None
                error: Exception = exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                error = exc
            self.discard(target, transport)
            if not tries_left:
                text = str(error) or type(error).__name__
                raise SSHNetworkError(target, f"the connection failed while opening a channel ({text})",
                                      address=resource_address) from None

    @contextmanager
    def session(self, target: SSHTarget, *,
                resource_address: str | None = None) -> Iterator[paramiko.Channel]:
        entry = self._entry(target)
        with entry.sessions:
            channel = self.open_channel(
                target, lambda t: t.open_session(timeout=target.connect_timeout_s),
                resource_address=resource_address)
            try:
                yield channel
            finally:
                channel.close()

    @contextmanager
    def sftp(self, target: SSHTarget, *,
             resource_address: str | None = None) -> Iterator[paramiko.SFTPClient]:
        """A fresh SFTP session per use: ``SFTPClient`` is not safe to share between threads."""
        entry = self._entry(target)
        with entry.sessions:
            client = self.open_channel(target, paramiko.SFTPClient.from_transport,
                                       resource_address=resource_address)
            try:
                yield client
            finally:
                client.close()

    def close_all(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            with entry.lock:
                if entry.transport is not None:
                    entry.transport.close()
                    entry.transport = None

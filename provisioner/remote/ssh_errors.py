"""The errors of the SSH layer, and the one place paramiko's and the socket module's many errors
become them (after pyinfra's ``connectors/ssh.py``: one readable message that says what to do).

- :class:`SSHConnectionError` — every failure to reach or log into a host. Its subclasses say
  whether waiting helps: :class:`SSHNetworkError` is also a ``TransientProviderError`` (refused,
  timed out, reset, unreachable: the host may still be booting), so the engine may retry it;
  :class:`SSHAuthenticationError`, :class:`HostKeyMismatch` and :class:`HostKeyNotRecorded` are
  not retried by anyone, because retrying cannot fix them.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

from provisioner.errors import ProviderError, TransientProviderError

if TYPE_CHECKING:
    from provisioner.remote.ssh_target import HostKey, SSHTarget


class SSHConnectionError(ProviderError):
    """Cannot connect to (or log into) an SSH host."""

    def __init__(self, target: SSHTarget, reason: str, *, address: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(f"cannot connect to {target.display}: {reason}", address=address, hint=hint)
        self.target = target
        self.reason = reason


class SSHNetworkError(SSHConnectionError, TransientProviderError):
    """The network or the server's SSH daemon failed us; trying again later may work."""


class SSHAuthenticationError(SSHConnectionError):
    """The server refused our key (or we have no usable key)."""


class HostKeyNotRecorded(SSHConnectionError):
    """No host key is recorded for the target: the runner never trusts an unknown key."""

    def __init__(self, target: SSHTarget, *, address: str | None = None) -> None:
        super().__init__(
            target,
            "its host key is not recorded, and provisioner never trusts an unknown host key; "
            "scan the host key first and record it",
            address=address,
            hint="scan the host key first (provisioner.remote.ssh.scan_host_key) and record it in "
                 "the target's host_key, or list the host in the target's known_hosts file",
        )


class HostKeyMismatch(SSHConnectionError):
    """The host presented a key other than the recorded one: refuse before authenticating."""

    def __init__(self, target: SSHTarget, expected: list[HostKey], presented: HostKey, *,
                 resource_address: str | None = None) -> None:
        wanted = ", ".join(f"{k.fingerprint_sha256} ({k.type})" for k in expected)
        replace = f"provisioner apply --replace {resource_address}" if resource_address else \
            "provisioner apply --replace <the resource that records this host>"
        fix = f"if this host was rebuilt on purpose, run: {replace}"
        reason = (
            f"host key mismatch: expected {wanted}, the host presented "
            f"{presented.fingerprint_sha256} ({presented.type}). Someone may be intercepting the "
            "connection, or the host was rebuilt"
        )
        super().__init__(target, reason, address=resource_address, hint=fix)
        self.expected = expected
        self.presented = presented


def describe_network_error(exc: BaseException, timeout_s: float) -> tuple[str, bool]:
    """``(reason, retryable)`` for a socket-level failure."""
    from paramiko.ssh_exception import NoValidConnectionsError

    if isinstance(exc, NoValidConnectionsError):
        inner = list(exc.errors.values())
        if inner and all(getattr(e, "errno", None) == errno.ECONNREFUSED for e in inner):
            return "connection refused", True
        return "host unreachable", True
    if isinstance(exc, socket.gaierror):
        # EAI_AGAIN is a DNS server hiccup; any other resolution failure is a wrong name.
        return f"cannot resolve the host name ({exc.strerror})", exc.errno == socket.EAI_AGAIN
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout_s:g}s", True
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", True
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server", True
    if isinstance(exc, EOFError):
        return "the server closed the connection", True
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc) or type(exc).__name__
        return what[0].lower() + what[1:], True
    return str(exc) or type(exc).__name__, True


def translate(exc: BaseException, target: SSHTarget, *, key_files: list[str],
              resource_address: str | None = None) -> SSHConnectionError:
    """Turn whatever connecting raised into one :class:`SSHConnectionError` subclass."""
    import paramiko

    if isinstance(exc, SSHConnectionError):
        return exc
    where = {"address": resource_address}
    if isinstance(exc, paramiko.PasswordRequiredException):
        return SSHAuthenticationError(
            target, f"the key {', '.join(key_files)} is encrypted", **where,
            hint="provisioner does not ask for passphrases: load the key into ssh-agent "
                 "and leave key_file unset, or use an unencrypted deploy key")
    if isinstance(exc, paramiko.BadAuthenticationType):
        return SSHAuthenticationError(
            target, f"the server does not accept public keys (it allows: {', '.join(exc.allowed_types)})",
            **where, hint="enable PubkeyAuthentication on the host")
    if isinstance(exc, paramiko.AuthenticationException):
        which = f"with key {', '.join(key_files)}" if key_files else \
            "with the ssh-agent's and the default keys (~/.ssh/id_*)"
        return SSHAuthenticationError(
            target, f"authentication failed {which} (check the key and the user)", **where,
            hint=f"the key's public half must be in ~{target.user}/.ssh/authorized_keys on the "
                 f"host, and the user ({target.user}) must be allowed to log in")
    if isinstance(exc, paramiko.SSHException):
        # Protocol trouble before authentication (banner not sent, negotiation cut short): an
        # sshd that is starting, or overloaded (MaxStartups), behaves like this.
        text = str(exc) or type(exc).__name__
        return SSHNetworkError(target, f"SSH handshake failed ({text})", **where)
    if isinstance(exc, (OSError, EOFError)):
        reason, retryable = describe_network_error(exc, target.connect_timeout_s)
        cls = SSHNetworkError if retryable else SSHConnectionError
        return cls(target, reason, **where)
    raise exc

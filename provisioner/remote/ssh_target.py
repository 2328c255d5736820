"""Where an SSH host is and how it proves who it is: :class:`SSHTarget` and :class:`HostKey`.

Free of paramiko at import time (the ssh config parser is imported when an alias is resolved), so
spec and state code may use these data classes without pulling in the SSH stack.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from provisioner.errors import ProviderError

DEFAULT_PORT = 22
DEFAULT_USER = "root"
DEFAULT_SSH_CONFIG = "~/.ssh/config"


@dataclass(frozen=True)
class HostKey:
    """A server's public host key, as OpenSSH writes it (``<type> <base64>``)."""

    type: str
    base64: str
    fingerprint_sha256: str

    @classmethod
    def parse(cls, text: str) -> HostKey:
        """``"ssh-ed25519 AAAA... [comment]"`` (a known_hosts or .pub line without the host)."""
        parts = text.split()
        if len(parts) < 2:
            raise ProviderError(f"invalid host key {_clip(text)!r}: expected '<type> <base64>'")
        key_type, b64 = parts[0], parts[1]
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ProviderError(f"invalid host key {_clip(text)!r}: the key is not base64") from None
        if _blob_type(blob) != key_type:
            raise ProviderError(f"invalid host key {_clip(text)!r}: the key is not of type {key_type}")
        return cls(key_type, b64, fingerprint(blob))

    @classmethod
    def from_pkey(cls, key: Any) -> HostKey:
        """From a ``paramiko.PKey`` (a server key as presented)."""
        return cls(key.get_name(), key.get_base64(), fingerprint(key.asbytes()))

    @property
    def blob(self) -> bytes:
        return base64.b64decode(self.base64)

    def __str__(self) -> str:
        return f"{self.type} {self.base64}"


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint (``ssh-keygen -lf``): unpadded base64 of the blob's digest."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _blob_type(blob: bytes) -> str | None:
    # An SSH public key blob starts with its type as an SSH string (uint32 length + bytes).
    if len(blob) < 4:
        return None
    size = int.from_bytes(blob[:4], "big")
    return blob[4:4 + size].decode("ascii", errors="replace") if 4 + size <= len(blob) else None


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class SSHTarget:
    """A host reached over SSH, as a resource's ``target`` attribute records it.

    ``alias`` names a ``Host`` block of an OpenSSH client config (``ssh_config``, by default
    ``~/.ssh/config``); its ``HostName``, ``Port``, ``User`` and ``IdentityFile`` fill the fields
    this target leaves at their defaults (empty address, port 22, user root, no key file), so an
    explicit setting wins as it does with ``ssh``. ``ProxyJump`` and other options are not read.

    ``host_key`` is the key the host must present (``"<type> <base64>"``); without it (and
    without an entry in ``known_hosts``) the runner refuses to connect: scan and record it first
    (:func:`provisioner.remote.ssh.scan_host_key`).
    """

    address: str = ""
    port: int = DEFAULT_PORT
    user: str = DEFAULT_USER
    key_file: str | None = None
    alias: str | None = None
    host_key: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None
    connect_timeout_s: float = 10
    command_timeout_s: float = 120
    connect_attempts: int = 4  # at most (the connect retry policy's own limit applies too)

    def __post_init__(self) -> None:
        if not self.address and not self.alias:
            raise ProviderError("an SSH target needs an address or an alias")
        if not 0 < int(self.port) < 65536:
            raise ProviderError(f"SSH target {self.address or self.alias}: port {self.port} is out of range")
        if self.connect_timeout_s <= 0 or self.command_timeout_s <= 0:
            raise ProviderError(f"SSH target {self.address or self.alias}: timeouts must be positive")
        if self.host_key is not None:
            HostKey.parse(self.host_key)  # fail early, at the boundary

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SSHTarget:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ProviderError(
                f"unknown SSH target field(s): {', '.join(unknown)}",
                hint=f"the fields are: {', '.join(sorted(known))}",
            )
        values = {k: v for k, v in mapping.items() if v is not None}
        try:
            if "port" in values:
                values["port"] = int(values["port"])
            for name in ("connect_timeout_s", "command_timeout_s"):
                if name in values:
                    values[name] = float(values[name])
            if "connect_attempts" in values:
                values["connect_attempts"] = max(1, int(values["connect_attempts"]))
        except (TypeError, ValueError) as exc:
            raise ProviderError(f"invalid SSH target: {exc}") from None
        for name in ("address", "user", "key_file", "alias", "host_key", "known_hosts", "ssh_config"):
            if name in values and not isinstance(values[name], str):
                raise ProviderError(f"invalid SSH target: {name} must be a string")
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def display(self) -> str:
        """``root@10.0.0.5:22`` (the alias stands in for an address not resolved yet)."""
        return f"{self.user}@{self.address or self.alias}:{self.port}"

    @property
    def expected_host_key(self) -> HostKey | None:
        return HostKey.parse(self.host_key) if self.host_key else None

    def resolved(self) -> SSHTarget:
        """This target with its alias looked up in the ssh config (itself when it has no alias)."""
        if not self.alias:
            return self
        path = os.path.expanduser(self.ssh_config or DEFAULT_SSH_CONFIG)
        found: dict[str, Any] = {}
        if os.path.exists(path):
            import paramiko  # only now: see the module docstring

            try:
                found = paramiko.SSHConfig.from_path(path).lookup(self.alias)
            except (OSError, paramiko.SSHException) as exc:
                raise ProviderError(f"cannot read ssh config {path}: {exc}") from None
        elif self.ssh_config:
            raise ProviderError(f"ssh config {path} does not exist (named for alias {self.alias!r})")
        changes: dict[str, Any] = {}
        if not self.address or self.address == self.alias:
            changes["address"] = found.get("hostname") or self.alias
        if self.port == DEFAULT_PORT and found.get("port"):
            try:
                changes["port"] = int(found["port"])
            except ValueError:
                raise ProviderError(
                    f"ssh config {path}: Host {self.alias}: bad Port {found['port']!r}") from None
        if self.user == DEFAULT_USER and found.get("user"):
            changes["user"] = found["user"]
        if self.key_file is None and found.get("identityfile"):
            files = [os.path.expanduser(f) for f in found["identityfile"]]
            changes["key_file"] = next((f for f in files if os.path.exists(f)), files[0])
        return replace(self, **changes)

    def connection_key(self) -> tuple[Any, ...]:
        """What makes two targets share a connection: where, who, and which host key is trusted."""
        return (self.address, self.port, self.user, self.key_file, self.host_key, self.known_hosts)

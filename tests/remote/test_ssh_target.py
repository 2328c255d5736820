"""SSHTarget, HostKey and the SSH error messages: pure data, no server needed."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.errors import ProviderError, TransientProviderError
from provisioner.remote.ssh_errors import HostKeyMismatch, SSHConnectionError, SSHNetworkError
from provisioner.remote.ssh_target import HostKey, SSHTarget


def ed25519_line(seed: int = 1) -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([seed]) * 32
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def test_mapping_round_trip_and_display() -> None:
    target = SSHTarget.from_mapping({"address": "10.0.0.5", "port": "2222", "host_key": ed25519_line()})
    assert target.port == 2222 and target.user == "root"
    assert target.display == "root@10.0.0.5:2222"
    assert SSHTarget.from_mapping(target.to_mapping()) == target
    assert SSHTarget("10.0.0.5").display == "root@10.0.0.5:22"
    assert hash(target) == hash(SSHTarget.from_mapping(target.to_mapping()))


@pytest.mark.parametrize("mapping, message", [
    ({"address": "h", "colour": "red"}, "unknown SSH target field(s): colour"),
    ({}, "needs an address or an alias"),
    ({"address": "h", "port": 0}, "out of range"),
    ({"address": "h", "port": "ssh"}, "invalid SSH target"),
    ({"address": "h", "host_key": "ssh-ed25519"}, "expected '<type> <base64>'"),
    ({"address": "h", "host_key": "ssh-ed25519 !!!"}, "not base64"),
    ({"address": "h", "host_key": "ssh-rsa " + ed25519_line().split()[1]}, "not of type ssh-rsa"),
    ({"address": "h", "connect_timeout_s": 0}, "timeouts must be positive"),
])
def test_invalid_targets_are_refused(mapping: dict, message: str) -> None:
    with pytest.raises(ProviderError) as caught:
        SSHTarget.from_mapping(mapping)
    assert message in str(caught.value)


def test_host_key_fingerprint_is_openssh_sha256() -> None:
    import paramiko

    key = HostKey.parse(ed25519_line() + " a comment")
    pkey = paramiko.PKey.from_type_string("ssh-ed25519", key.blob)
    assert key.fingerprint_sha256 == pkey.fingerprint
    assert key.fingerprint_sha256.startswith("SHA256:") and not key.fingerprint_sha256.endswith("=")
    assert HostKey.from_pkey(pkey) == key
    assert str(key) == ed25519_line()


def test_alias_fills_only_what_the_target_leaves_at_defaults(tmp_path: Path) -> None:
    key = tmp_path / "id_web"
    key.write_text("not used here")
    config = tmp_path / "config"
    config.write_text(
        "Host web1\n  HostName 10.1.2.3\n  Port 2200\n  User deploy\n"
        f"  IdentityFile {tmp_path}/missing\n  IdentityFile {key}\n"
        "Host *\n  User fallback\n")
    resolved = SSHTarget(alias="web1", ssh_config=str(config)).resolved()
    assert (resolved.address, resolved.port, resolved.user, resolved.key_file) == \
        ("10.1.2.3", 2200, "deploy", str(key))
    explicit = SSHTarget(alias="web1", ssh_config=str(config), port=2201, user="ops",
                         key_file="/k").resolved()
    assert (explicit.address, explicit.port, explicit.user, explicit.key_file) == \
        ("10.1.2.3", 2201, "ops", "/k")
    other = SSHTarget(alias="db", ssh_config=str(config)).resolved()
    assert (other.address, other.user) == ("db", "fallback")
    assert SSHTarget("10.0.0.1").resolved() == SSHTarget("10.0.0.1")


def test_alias_config_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        SSHTarget(alias="web1", ssh_config=str(tmp_path / "nope")).resolved()
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/config: the alias is the host name
    assert SSHTarget(alias="web1").resolved().address == "web1"


def test_error_classes_tell_retryable_from_not() -> None:
    target = SSHTarget("10.0.0.5")
    network = SSHNetworkError(target, "connection refused")
    assert str(network) == "cannot connect to root@10.0.0.5:22: connection refused"
    assert isinstance(network, TransientProviderError) and isinstance(network, SSHConnectionError)
    mismatch = HostKeyMismatch(target, [HostKey.parse(ed25519_line(1))], HostKey.parse(ed25519_line(2)))
    assert not isinstance(mismatch, TransientProviderError)
    assert "--replace <the resource that records this host>" in mismatch.hint


def test_cli_modules_do_not_import_paramiko() -> None:
    code = ("import sys, provisioner.remote.connect, provisioner.remote.runner, "
            "provisioner.remote.ssh_target, provisioner.remote.ssh_errors; "
            "assert 'paramiko' not in sys.modules, 'paramiko imported'")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)

"""SSHRunner against a real OpenSSH server (see conftest.py): host keys, commands, files,
errors, the connection pool and tunnels. No part of paramiko is mocked."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from provisioner.errors import ProviderError, TransientProviderError
from provisioner.remote.connect import runner_for
from provisioner.remote.runner import CommandFailed, Runner
from provisioner.remote.ssh import (
    ConnectionPool,
    HostKeyMismatch,
    HostKeyNotRecorded,
    SSHAuthenticationError,
    SSHNetworkError,
    SSHRunner,
    SSHTarget,
    scan_host_key,
)
from tests.remote.conftest import SSHServer, free_port, keygen, require_sshd


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    pool = ConnectionPool()
    yield pool
    pool.close_all()


def target_for(sshd: SSHServer, **changes) -> SSHTarget:
    values = dict(address="127.0.0.1", port=sshd.port, user="root", key_file=str(sshd.client_key),
                  host_key=sshd.host_key_line, connect_timeout_s=5)
    values.update(changes)
    return SSHTarget(**values)


def some_ed25519_key() -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


@pytest.fixture
def runner(sshd: SSHServer, pool: ConnectionPool) -> SSHRunner:
    return SSHRunner(target_for(sshd), resource_address="ssh_host.web", pool=pool)


# --- host keys ------------------------------------------------------------------------------

def test_scan_host_key_matches_ssh_keygen(sshd: SSHServer) -> None:
    scanned = scan_host_key(target_for(sshd, host_key=None, key_file=None))
    keygen_line = subprocess.run(["ssh-keygen", "-lf", f"{sshd.host_key}.pub"], check=True,
                                 capture_output=True, text=True).stdout
    assert scanned.fingerprint_sha256 == keygen_line.split()[1]
    assert f"{scanned.type} {scanned.base64}" == sshd.host_key_line


def test_wrong_host_key_is_refused_before_anything_runs(sshd: SSHServer, pool: ConnectionPool,
                                                         tmp_path: Path) -> None:
    impostor = keygen(tmp_path / "other_host_key")
    expected = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    runner = SSHRunner(target_for(sshd, host_key=expected), resource_address="ssh_host.web",
                       pool=pool)
    marker = tmp_path / "marker"
    with pytest.raises(HostKeyMismatch) as caught:
        runner.run(f"touch {marker}")
    error = caught.value
    want = subprocess.run(["ssh-keygen", "-lf", f"{impostor}.pub"], capture_output=True,
                          text=True).stdout.split()[1]
    got = scan_host_key(target_for(sshd)).fingerprint_sha256
    assert want in str(error) and got in str(error)
    assert f"127.0.0.1:{sshd.port}" in str(error)
    assert "provisioner apply --replace ssh_host.web" in error.hint
    assert "provisioner apply --replace ssh_host.web" not in str(error)  # said once, as the hint
    assert not isinstance(error, TransientProviderError)
    assert not marker.exists()
    assert pool.connects == 0


def test_unrecorded_host_key_is_refused(sshd: SSHServer, pool: ConnectionPool) -> None:
    runner = SSHRunner(target_for(sshd, host_key=None), pool=pool)
    with pytest.raises(HostKeyNotRecorded, match="not recorded") as caught:
        runner.run("true")
    assert "scan" in str(caught.value)


def test_known_hosts_entry_counts_as_recorded(sshd: SSHServer, pool: ConnectionPool,
                                              tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}\n")
    runner = SSHRunner(target_for(sshd, host_key=None, known_hosts=str(known)), pool=pool)
    assert runner.run("echo ok").stdout == "ok\n"


def test_recorded_key_type_is_asked_for_first(tmp_path: Path, pool: ConnectionPool) -> None:
    # A host with several keys shows the one we ask for first; ask for the recorded one.
    require_sshd()
    server = SSHServer(tmp_path)
    rsa = tmp_path / "ssh_host_rsa_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    server.config.write_text(server.config.read_text() + f"HostKey {rsa}\n")
    server.start()
    try:
        rsa_line = " ".join(Path(f"{rsa}.pub").read_text().split()[:2])
        assert scan_host_key(target_for(server)).type == "ssh-ed25519"
        for recorded in (rsa_line, server.host_key_line):
            runner = SSHRunner(target_for(server, host_key=recorded), pool=pool)
            assert runner.run("echo ok").stdout == "ok\n"
    finally:
        server.stop()


# --- run ------------------------------------------------------------------------------------

def test_run_output_exit_codes_and_stdin(runner: SSHRunner) -> None:
    assert isinstance(runner, Runner)
    done = runner.run("echo hello; echo warn >&2")
    assert (done.exit_code, done.stdout, done.stderr) == (0, "hello\n", "warn\n")
    assert runner.run("exit 3", check=False).exit_code == 3
    with pytest.raises(CommandFailed, match=r"exit code 4") as caught:
        runner.run("echo broken >&2; exit 4")
    assert "broken" in str(caught.value) and runner.host in str(caught.value)
    assert runner.run("cat", stdin=b"secret\x00bytes").stdout == "secret\x00bytes"
    assert runner.run("echo $0").stdout == "sh\n"  # sh -c semantics, as LocalRunner
    assert runner.run("""printf '%s|' "a b" 'c'"$(echo d)" """).stdout == "a b|cd|"
    assert runner.run("cat", stdin=None).stdout == ""  # stdin is closed, not left waiting


def test_run_large_output_and_input_without_deadlock(runner: SSHRunner) -> None:
    size = 5 * 1024 * 1024
    done = runner.run(f"head -c {size} /dev/zero | tr '\\0' x; head -c 3000000 /dev/zero | tr '\\0' y >&2")
    assert len(done.stdout) == size and set(done.stdout) == {"x"}
    assert len(done.stderr) == 3000000
    payload = os.urandom(size)
    assert runner.run("sha256sum | cut -d' ' -f1", stdin=payload).stdout.strip() == \
        hashlib.sha256(payload).hexdigest()
    echoed = runner.run("cat", stdin=b"z" * size)  # writes while we still feed it
    assert len(echoed.stdout) == size
    started = time.monotonic()
    assert runner.run("echo early", stdin=b"z" * size).stdout == "early\n"  # never reads stdin
    assert time.monotonic() - started < 5


def test_run_timeout_kills_the_command(runner: SSHRunner) -> None:
    started = time.monotonic()
    with pytest.raises(CommandFailed, match=r"timed out after 1s"):
        runner.run("echo started; sleep 37.123 & wait", timeout=1)
    assert time.monotonic() - started < 6
    deadline = time.monotonic() + 5
    while subprocess.run(["pgrep", "-f", "sleep 37.123"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the timed-out command is still running"
        time.sleep(0.1)
    assert runner.run("echo after").stdout == "after\n"  # the connection is still usable


# --- files ----------------------------------------------------------------------------------

def test_put_creates_parents_sets_mode_and_replaces(runner: SSHRunner, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.txt"
    runner.put(str(path), b"first", mode=0o600)
    assert path.read_bytes() == b"first" and path.stat().st_mode & 0o777 == 0o600
    runner.put(str(path), b"second", mode=0o755)
    assert path.read_bytes() == b"second" and path.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.txt"]  # no temp files left


def test_put_is_atomic_for_readers(runner: SSHRunner, tmp_path: Path) -> None:
    path = tmp_path / "atomic.bin"
    stop = threading.Event()
    seen: list[int] = []
    bad: list[str] = []

    def content(i: int) -> bytes:
        body = bytes([i]) * (1000 + (i * 7919) % 300_000)
        return b"%08d" % len(body) + body

    def reader() -> None:
        while not stop.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            body = data[8:]
            if not data[:8].isdigit() or int(data[:8]) != len(body) or len(set(body)) != 1:
                bad.append(f"partial read of {len(data)} bytes")
            seen.append(len(data))

    runner.put(str(path), content(0))
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 51):
            runner.put(str(path), content(i), mode=0o640)
    finally:
        stop.set()
        thread.join()
    assert not bad
    assert len(seen) > 50
    assert path.read_bytes() == content(50)
    assert [p.name for p in tmp_path.iterdir()] == ["atomic.bin"]


def test_put_under_a_file_is_a_readable_error(runner: SSHRunner, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ProviderError, match=r"cannot write .*/plain/sub/f: Not a directory") as caught:
        runner.put(str(tmp_path / "plain" / "sub" / "f"), b"data")
    assert not isinstance(caught.value, TransientProviderError)


def test_read_existing_and_missing(runner: SSHRunner, tmp_path: Path) -> None:
    (tmp_path / "present").write_bytes(b"\x00data\xff" * 100_000)
    assert runner.read(str(tmp_path / "present")) == b"\x00data\xff" * 100_000
    assert runner.read(str(tmp_path / "absent")) is None
    assert runner.read(str(tmp_path / "no" / "such" / "dir")) is None


# --- connection errors ----------------------------------------------------------------------

def test_wrong_client_key_fails_fast_with_a_readable_error(sshd: SSHServer, pool: ConnectionPool,
                                                          tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    runner = SSHRunner(target_for(sshd, key_file=str(stranger)), pool=pool)
    started = time.monotonic()
    with pytest.raises(SSHAuthenticationError) as caught:
        runner.run("true")
    assert time.monotonic() - started < 1.5  # not retried (retries wait at least 1.75 s)
    message = str(caught.value)
    assert message.startswith(f"cannot connect to root@127.0.0.1:{sshd.port}: authentication failed")
    assert str(stranger) in message and "check the key and the user" in message
    assert "attempts" not in message
    assert not isinstance(caught.value, TransientProviderError)


def test_missing_key_file_is_a_readable_error(sshd: SSHServer, pool: ConnectionPool,
                                             tmp_path: Path) -> None:
    runner = SSHRunner(target_for(sshd, key_file=str(tmp_path / "nope")), pool=pool)
    with pytest.raises(SSHAuthenticationError, match="does not exist"):
        runner.run("true")


def test_connection_refused_is_retried_then_reported(pool: ConnectionPool) -> None:
    target = SSHTarget("127.0.0.1", port=free_port(), host_key=some_ed25519_key())
    started = time.monotonic()
    with pytest.raises(SSHNetworkError) as caught:
        SSHRunner(target, pool=pool).run("true")
    elapsed = time.monotonic() - started
    assert 1.0 < elapsed < 5
    assert str(caught.value) == (f"cannot connect to root@127.0.0.1:{target.port}: "
                                 "connection refused (after 4 attempts)")
    assert isinstance(caught.value, TransientProviderError)


# --- the pool -------------------------------------------------------------------------------

def test_connection_is_shared_by_runs_runners_and_threads(sshd: SSHServer,
                                                          pool: ConnectionPool) -> None:
    first = SSHRunner(target_for(sshd), pool=pool)
    for i in range(10):
        assert first.run(f"echo {i}").stdout == f"{i}\n"
    second = SSHRunner(target_for(sshd), resource_address="ssh_host.other", pool=pool)
    # More parallel commands than sshd's MaxSessions (10): they wait for a slot, none is refused.
    with ThreadPoolExecutor(12) as workers:
        outs = list(workers.map(lambda i: second.run(f"echo {i}").stdout, range(12)))
    assert outs == [f"{i}\n" for i in range(12)]
    second.put(f"{sshd.dir}/shared.txt", b"x")
    assert first.read(f"{sshd.dir}/shared.txt") == b"x"
    assert pool.connects == 1


def test_reconnects_after_sshd_restart(sshd: SSHServer, pool: ConnectionPool) -> None:
    runner = SSHRunner(target_for(sshd), pool=pool)
    assert runner.run("echo before").stdout == "before\n"
    sshd.restart()
    assert runner.run("echo after").stdout == "after\n"
    assert runner.read(str(sshd.config)) is not None
    assert pool.connects == 2


# --- targets --------------------------------------------------------------------------------

def test_alias_from_an_ssh_config_file(sshd: SSHServer, pool: ConnectionPool,
                                       tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host web1\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.client_key}\n\nHost *\n  User nobody\n")
    target = SSHTarget(alias="web1", ssh_config=str(config), host_key=sshd.host_key_line)
    runner = SSHRunner(target, pool=pool)
    assert runner.host == f"root@127.0.0.1:{sshd.port}"
    assert runner.run("whoami").stdout == "root\n"


def test_runner_for_a_target_mapping(sshd: SSHServer, tmp_path: Path) -> None:
    mapping = target_for(sshd).to_mapping()
    runner = runner_for(mapping)
    assert isinstance(runner, SSHRunner) and runner.target == SSHTarget.from_mapping(mapping)
    assert runner.run("echo via-connect").stdout == "via-connect\n"


# --- tunnel ---------------------------------------------------------------------------------

@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "hello.txt").write_text("hello through the tunnel")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait()


def test_tunnel_forwards_concurrent_requests_and_closes(runner: SSHRunner, http_server: int) -> None:
    def fetch(local: int, name: str = "hello.txt") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/{name}", timeout=10) as response:
            return response.read().decode()

    with runner.tunnel("127.0.0.1", http_server) as local:
        assert local != http_server
        assert fetch(local) == "hello through the tunnel"
        with ThreadPoolExecutor(20) as workers:
            results = list(workers.map(lambda _: fetch(local), range(20)))
        assert results == ["hello through the tunnel"] * 20
        with pytest.raises(urllib.error.HTTPError):
            fetch(local, "missing")
    with pytest.raises(OSError):
        fetch(local)  # the listener is gone


def test_tunnel_to_a_closed_port_fails_the_request_not_the_tunnel(runner: SSHRunner,
                                                                 http_server: int) -> None:
    closed = free_port()
    with runner.tunnel("127.0.0.1", closed) as local:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=5).read()
    with runner.tunnel("127.0.0.1", http_server) as local:
        assert urllib.request.urlopen(f"http://127.0.0.1:{local}/hello.txt", timeout=5).read()

"""The harness itself, with real namespaces and real sshd: hosts look like separate VMs (own
address, hostname, process table, /tmp), are reachable by SSH with verified host keys and by TCP
from each other, can be lost and brought back, and leave nothing behind.

The tests use their own prefix and subnet, so they never touch hosts someone started by hand
with the defaults. Tests in the first group share one harness and run in file order.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import Harness, HarnessError, stop_spawned
from tests.harness.fixtures import harness_hosts, require_root_and_netns
from tests.harness.procs import pid_namespace, pids_in_namespace, scan

PREFIX, SUBNET = "prvt", "10.237.1"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def assert_nothing_left(harness: Harness) -> None:
    assert harness.leftovers() == {"netns": [], "links": [], "processes": [], "mounts": []}
    assert not [line for line in _ip("netns", "list") if line.startswith(f"{harness.prefix}-")]
    assert f"{harness.prefix}br0" not in " ".join(_ip("-o", "link"))
    assert not harness.root.exists()
    ours = [line for line in _ps() if str(harness.root) in line]
    assert ours == [], ours


def _ip(*args: str) -> list[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def _ps() -> list[str]:
    return subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def ssh(info, name: str, command: str, known_hosts: str | None = None):
    return subprocess.run(info.ssh_command(name, command, known_hosts=known_hosts),
                          capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Three hosts for the module, plus a copy of the known_hosts file as first handed out."""
    require_root_and_netns()
    harness = Harness(PREFIX, SUBNET)
    try:
        info = harness.up(["a", "b", "c"])
        seeded = tmp_path_factory.mktemp("ssh") / "known_hosts"
        shutil.copy(info.known_hosts, seeded)
        yield harness, info, str(seeded)
    finally:
        harness.down()
        assert_nothing_left(harness)


def test_each_host_has_its_own_address_and_hostname(hosts):
    harness, info, _ = hosts
    assert [(h.name, h.address) for h in info.hosts] == [
        ("a", f"{SUBNET}.10"), ("b", f"{SUBNET}.11"), ("c", f"{SUBNET}.12")]
    for host in info.hosts:
        done = harness.exec(host.name, "hostname; ip -4 -o addr show dev eth0; ip route; "
                                       "cat /etc/hostname; getent hosts $(hostname)",
                            check=True)
        lines = done.stdout.splitlines()
        assert lines[0] == host.name
        assert f"\n{host.name}\n{host.address} " in done.stdout  # /etc/hostname, /etc/hosts
        assert f"inet {host.address}/24" in lines[1]
        assert f"default via {SUBNET}.1" in done.stdout
    # No DNS server: unknown names fail at once instead of after resolv.conf's timeouts.
    started = time.monotonic()
    assert harness.exec("a", "getent hosts no-such-host.invalid").returncode == 2
    assert time.monotonic() - started < 3
    # Nothing a host sends is routed beyond this machine.
    assert Path(f"/proc/sys/net/ipv4/conf/{PREFIX}br0/forwarding").read_text().strip() == "0"


def test_process_tables_are_separate(hosts):
    harness, _, _ = hosts
    tag = str(1000 + os.getpid() % 1000)  # a sleep nobody else runs
    harness.exec("a", f"sleep {tag} >/dev/null 2>&1 </dev/null &", check=True)
    on_a = harness.exec("a", "ps -eo pid,args", check=True).stdout
    on_b = harness.exec("b", "ps -eo pid,args", check=True).stdout
    assert f"sleep {tag}" in on_a and f"sleep {tag}" not in on_b
    assert on_a.splitlines()[1].split()[0] == "1"  # the host's init is its PID 1
    harness.exec("a", f"kill $(pgrep -x -f 'sleep {tag}')", check=True)


def test_tmp_run_and_node_dirs_are_private(hosts):
    harness, _, _ = hosts
    name = f"harness-{uuid.uuid4().hex}"
    for private in ("/tmp", "/run", "/var/lib/provisioner"):
        harness.exec("a", f"echo hi > {private}/{name}", check=True)
        assert harness.exec("a", f"cat {private}/{name}").stdout == "hi\n"
        assert harness.exec("b", f"test -e {private}/{name}").returncode == 1
        assert not os.path.exists(f"{private}/{name}")


def test_ssh_into_every_host_verifying_host_keys(hosts):
    _, info, seeded = hosts
    for host in info.hosts:
        done = ssh(info, host.name, "hostname", known_hosts=seeded)
        assert (done.returncode, done.stdout.strip()) == (0, host.name), done.stderr


def test_hosts_reach_each_other_over_tcp(hosts):
    harness, info, _ = hosts
    address = info.address("a")
    harness.exec("a", "mkdir -p /tmp/www && echo served-by-a > /tmp/www/index.txt", check=True)
    server = harness.spawn("a", f"exec python3 -m http.server 8080 --bind {address} "
                                "--directory /tmp/www")
    try:
        deadline, body = time.monotonic() + 10, ""
        while time.monotonic() < deadline and body != "served-by-a\n":
            fetch = (f"import urllib.request; print(urllib.request.urlopen("
                     f"'http://{address}:8080/index.txt', timeout=2).read().decode(), end='')")
            body = harness.exec("b", [sys.executable, "-c", fetch]).stdout
            time.sleep(0.05)
        assert body == "served-by-a\n"
    finally:
        stop_spawned(server)


def test_kill_loses_the_whole_host_and_restart_brings_it_back_empty(hosts):
    harness, info, seeded = hosts
    harness.exec("a", "echo before > /tmp/left-behind; sleep 999 >/dev/null 2>&1 </dev/null &",
                  check=True)
    namespace = pid_namespace(harness.init_pid("a"))
    assert len(pids_in_namespace(namespace)) >= 3  # init, sshd, sleep

    harness.kill("a")
    assert harness.init_pid("a") is None
    assert pids_in_namespace(namespace) == []
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((info.address("a"), 22), timeout=2).close()
    assert time.monotonic() - started < 1
    with pytest.raises(HarnessError, match="not running"):
        harness.exec("a", "true")
    assert ssh(info, "b", "hostname", known_hosts=seeded).returncode == 0  # others unharmed

    harness.restart("a")
    done = ssh(info, "a", "hostname; ls -A /tmp; pgrep -x sleep || true", known_hosts=seeded)
    assert (done.returncode, done.stdout) == (0, "a\n"), done.stderr


def test_unplugged_host_times_out_instead_of_refusing(hosts):
    harness, info, seeded = hosts
    harness.kill("b", unplug=True)
    with pytest.raises((socket.timeout, OSError)) as raised:
        socket.create_connection((info.address("b"), 22), timeout=1).close()
    assert not isinstance(raised.value, ConnectionRefusedError)
    harness.restart("b")
    assert ssh(info, "b", "hostname", known_hosts=seeded).stdout == "b\n"


def test_restart_with_fresh_host_key_is_a_rebuilt_vm(hosts):
    harness, info, seeded = hosts
    new = harness.restart("c", fresh_host_key=True)
    assert new.host("c").host_key != info.host("c").host_key
    refused = ssh(info, "c", "hostname", known_hosts=seeded)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr, refused.stderr
    accepted = ssh(new, "c", "hostname")  # the harness's known_hosts has the new key
    assert (accepted.returncode, accepted.stdout) == (0, "c\n"), accepted.stderr


def test_down_removes_everything_and_twice_is_fine(hosts):
    harness, _, _ = hosts
    harness.down()
    assert_nothing_left(harness)
    harness.down()
    assert_nothing_left(harness)


def test_up_cleans_up_after_a_crashed_run():
    require_root_and_netns()
    crashed = Harness(PREFIX, SUBNET)
    try:
        crashed.up(["x", "y"])
        # The crash: the record is lost, a namespace and a link are left over by name only.
        (crashed.root / "harness.json").unlink()
        subprocess.run(["ip", "netns", "add", f"{PREFIX}-stale"], check=True)
        subprocess.run(["ip", "link", "add", f"{PREFIX}v99", "type", "veth", "peer", "name",
                        f"{PREFIX}v98"], check=True)

        with harness_hosts(["x"], prefix=PREFIX, subnet=SUBNET) as info:
            harness = info.harness
            assert harness.leftovers()["netns"] == [f"{PREFIX}-x"]
            assert {proc.host for proc in scan(PREFIX)} == {"x"}
            assert ssh(info, "x", "hostname").stdout == "x\n"
        assert_nothing_left(harness)
    finally:
        crashed.down()


def test_cli_up_and_down_from_separate_processes():
    """The CLI, with `down` in another process than `up`. A small driver runs them and adopts
    their orphans (PR_SET_CHILD_SUBREAPER), so none stays a zombie under this machine's PID 1."""
    require_root_and_netns()
    driver = r"""
import ctypes, json, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
cli = [sys.executable, "-m", "tests.harness", "--prefix", "prvk", "--subnet", "10.237.3"]
run = lambda *a: subprocess.run(cli + list(a), capture_output=True, text=True)
up = run("up", "2", "--names", "p,q", "--known-hosts")
out = {"up": [up.returncode, up.stdout, up.stderr]}
if up.returncode == 0:
    info = json.loads(up.stdout)
    q = info["hosts"][1]["address"]
    out["ssh"] = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", info["key_file"], "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + info["known_hosts"],
         "root@" + q, "hostname"], capture_output=True, text=True).stdout
    out["exec"] = run("exec", "p", "--", "hostname").stdout
down = run("down")
out["down"] = [down.returncode, down.stderr]
deadline, out["all_reaped"] = time.monotonic() + 10, False
while time.monotonic() < deadline:  # reap the adopted orphans (all dead after down)
    try:
        if os.waitpid(-1, os.WNOHANG) == (0, 0):
            time.sleep(0.05)
    except ChildProcessError:
        out["all_reaped"] = True
        break
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", driver], cwd=REPO, capture_output=True,
                          text=True, timeout=90)
    try:
        out = json.loads(done.stdout)
    finally:
        Harness("prvk", "10.237.3").down()
    assert out["up"][0] == 0, out["up"][2]
    shown = json.loads(out["up"][1])
    assert shown == {"hosts": [{"name": "p", "address": "10.237.3.10"},
                               {"name": "q", "address": "10.237.3.11"}],
                     "user": "root", "key_file": "/var/lib/prvk-harness/id_ed25519",
                     "known_hosts": "/var/lib/prvk-harness/known_hosts"}
    assert (out["ssh"], out["exec"]) == ("q\n", "p\n")
    assert out["down"] == [0, ""]
    assert_nothing_left(Harness("prvk", "10.237.3"))
    assert out["all_reaped"], "a process of the CLI's hosts outlived `down`"


def test_without_root_hosts_are_skipped_outside_ci_and_fail_under_ci(monkeypatch):
    from tests.harness import fixtures

    monkeypatch.setattr(fixtures.os, "geteuid", lambda: 1000)
    fixtures._host_problem.cache_clear()
    try:
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match="not running as root"):
            fixtures.require_root_and_netns()
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match="required under CI"):
            fixtures.require_root_and_netns()
    finally:
        fixtures._host_problem.cache_clear()  # the real answer for the tests that follow

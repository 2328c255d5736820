"""provisioner.providers.processes on real (non-Ray) processes, and local head helpers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import pytest

from provisioner.errors import ProviderError
from provisioner.providers import processes
from provisioner.providers.base import Owner, ProviderContext
from provisioner.providers.local import LocalRayHead, port_in_use, short_name

# A parent that starts a grandchild in a process group of its own (as the raylet does with
# workers), then sleeps; the marker argument stands for the --temp-dir argument.
PARENT = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
    "time.sleep(60)\n"
)


def spawn(marker: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PARENT, f"--temp-dir={marker}"],
                            start_new_session=True)


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_finds_group_and_descendants_only_for_its_temp_dir(tmp_path):
    temp = str(tmp_path / "ray")
    ours = spawn(temp)
    decoy = spawn(temp + "x")  # a sibling path sharing our prefix: never ours
    try:
        wait_for(lambda: len(processes.ray_processes(ours.pid, temp)) == 2)
        found = processes.ray_processes(ours.pid, temp)
        assert ours.pid in found
        assert decoy.pid not in found
        assert processes.group_alive(ours.pid, temp)
        assert not processes.group_alive(decoy.pid, temp)
        # A recorded pgid that is someone else's group is not taken (pgid reuse guard).
        assert processes.ray_processes(decoy.pid, temp) == found
        survivors = processes.stop_ray(ours.pid, temp, grace_s=5)
        assert survivors == set()
        assert not any(processes.is_alive(pid) for pid in found)
        assert processes.is_alive(decoy.pid)
        ours.wait(timeout=5)
    finally:
        for proc in (ours, decoy):
            group = processes.ray_processes(proc.pid, temp + ("x" if proc is decoy else ""))
            processes.terminate_tree(group, grace_s=2)
            proc.wait(timeout=5)


def test_terminate_tree_kills_what_ignores_sigterm():
    proc = subprocess.Popen([sys.executable, "-c",
                             "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                             " print('ready', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE)
    proc.stdout.readline()
    started = time.monotonic()
    assert processes.terminate_tree([proc.pid], grace_s=0.5) == set()
    took = time.monotonic() - started
    assert 0.5 <= took < 5  # it took the SIGKILL after the grace
    assert not processes.is_alive(proc.pid)
    proc.wait(timeout=1)  # already reaped by terminate_tree (its exit status went there)


def test_short_name_stays_short_and_unique():
    assert short_name("local_ray_head.head") == "head"
    long = short_name("local_ray_head.a_rather_long_head_name")
    assert len(long) <= 10
    assert short_name('local_ray_head.head["a"]') != short_name('local_ray_head.head["b"]')
    assert "/" not in short_name('local_ray_head.x["../../etc"]')


def test_port_in_use_and_clear_error(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use(port)
        owner = Owner("t", str(uuid.uuid4()))
        head = LocalRayHead(ProviderContext(owner, tmp_path, tmp_path), base_dir=tmp_path / "p")
        desired = {"gcs_port": 6399, "dashboard_port": port, "client_server_port": 9931,
                   "dashboard_agent_port": 9932, "num_cpus": 1, "node_ip": "127.0.0.1"}
        if any(port_in_use(desired[k]) for k in ("gcs_port", "client_server_port", "dashboard_agent_port")):
            pytest.skip("a fixed test port is taken on this machine")
        with pytest.raises(ProviderError, match=rf"dashboard_port {port} is in use by another process"):
            head.create("local_ray_head.head", desired, "tok")
        with pytest.raises(ProviderError, match="worker port range"):
            head.create("local_ray_head.head", {**desired, "dashboard_port": 10005}, "tok")
        with pytest.raises(ProviderError, match="distinct"):
            head.create("local_ray_head.head", {**desired, "dashboard_port": 6399}, "tok")
    assert not port_in_use(port)

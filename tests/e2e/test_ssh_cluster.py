"""An SSH cluster end to end on namespace hosts: real sshd, real Ray, real Serve, real HAProxy.

Hosts lb, head, w1, w2, w3; the quickstart's two apps. One story, in order:
apply -> every route through the LB and every node's proxy -> no-op plan and apply keep every
Ray session -> remove w3 while a client loop runs (0 failures) -> kill w2's host (failures only
inside the health-check window) -> a changed host key stops the plan and changes nothing, and
--replace shows and trusts the new key -> destroy leaves no process or file of ours.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.ssh_support import (ClientLoop, cli, eventually, get, nodes_with_replicas,
                                   session_ids, ssh_cluster, write_hosts)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

HOSTS = ["lb", "head", "w1", "w2", "w3"]
RAY_HOSTS = ["head", "w1", "w2", "w3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with ssh_cluster(tmp_path_factory.mktemp("ssh"), HOSTS, prefix="prve",
                     subnet="10.237.6") as made:
        yield made


def test_ssh_cluster_story(cluster) -> None:
    workdir, info = cluster
    lb = f"http://{info.address('lb')}:8080"

    planned = cli(cluster, "plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    for name in HOSTS:  # first contact: the plan shows the key it will trust
        assert f"# ssh_host.{name} will be created" in planned.stdout
    assert "fingerprint" in planned.stdout and "SHA256:" in planned.stdout

    applied = cli(cluster, "apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert get(f"{lb}/hello") == (200, "hello world (v1)")
    status, body = get(f"{lb}/api/square/12")
    assert status == 200 and json.loads(body) == {"n": 12, "square": 144}
    replica_nodes = nodes_with_replicas(cluster)
    assert replica_nodes, "no replica is running"
    for address in replica_nodes:  # each node's proxy that has replicas answers directly
        assert eventually(lambda: get(f"http://{address}:8000/hello"),
                          (200, "hello world (v1)"), seconds=30) is True
    assert json.loads(cli(cluster, "output", "--json").stdout)["lb_url"] == lb

    sessions = session_ids(cluster, RAY_HOSTS)
    assert all(s.startswith("session_") for s in sessions.values()), sessions
    assert cli(cluster, "plan", "--detailed-exitcode").returncode == 0
    again = cli(cluster, "apply", "--auto-approve")
    assert again.returncode == 0 and "0 added, 0 changed, 0 destroyed" in again.stdout
    assert session_ids(cluster, RAY_HOSTS) == sessions, "a no-op apply restarted Ray"

    # Remove w3 from the hosts file: its node and host go, the LB drops it first, no request fails.
    write_hosts(workdir, info, [h for h in HOSTS if h != "w3"])
    removal = cli(cluster, "plan")
    assert "# ray_node.w3 will be destroyed" in removal.stdout
    assert "# ssh_host.w3 will be destroyed" in removal.stdout
    assert "# haproxy_lb.main will be updated in-place" in removal.stdout
    assert "Plan: 0 to add, 1 to change, 2 to destroy." in removal.stdout, removal.stdout
    with ClientLoop(f"{lb}/hello") as loop:
        time.sleep(1)
        applied = cli(cluster, "apply", "--auto-approve", "--json")  # timed events
        time.sleep(1)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    print(f"\nworker removal: {len(loop.results)} requests, {loop.failures()} failed, "
          f"slowest answer {loop.slowest:.2f}s")
    assert len(loop.results) > 50
    assert loop.failures() == 0, (loop.errors, applied.stdout)
    assert info.harness.exec("w3", "pgrep -x raylet").returncode != 0
    assert info.harness.exec("w3", "ls -A /var/lib/provisioner").stdout.strip() == ""

    # Lose w2's host. HAProxy takes w2 out in inter 1s x fall 2; until Ray's GCS declares the
    # node dead (its own health checks), other nodes' proxies may still pick replicas that were
    # on w2. Failures are allowed inside that window only, and there must be none after it.
    with ClientLoop(f"{lb}/hello") as loop:
        time.sleep(2)
        killed_at = time.monotonic()
        info.harness.kill("w2")
        time.sleep(35)
    window = 20.0
    during = loop.failures() - loop.failures(after=killed_at + window)
    print(f"worker host lost: {len(loop.results)} requests, {during} failed within {window:.0f}s, "
          f"{loop.failures(after=killed_at + window)} after")
    assert loop.failures(after=killed_at + window) == 0
    assert loop.failures() == during

    # w1 rebuilt with a new host key: the plan stops with a clear error and changes nothing.
    state_before = (workdir / ".provisioner" / "state.json").read_bytes()
    info.harness.restart("w1", fresh_host_key=True)
    mismatch = cli(cluster, "plan")
    assert mismatch.returncode == 1
    assert "host key" in mismatch.stderr.lower() and "ssh_host.w1" in mismatch.stderr
    assert (workdir / ".provisioner" / "state.json").read_bytes() == state_before
    replaced = cli(cluster, "plan", "--replace", "ssh_host.w1")
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert "fingerprint" in replaced.stdout
    write_hosts(workdir, info, ["lb", "head", "w1"])  # w2 is gone for good
    fixed = cli(cluster, "apply", "--auto-approve", "--replace", "ssh_host.w1")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert info.harness.exec("w1", "pgrep -x raylet").returncode == 0, "w1 did not rejoin"
    rejoined = session_ids(cluster, ["head", "w1"])
    assert rejoined["w1"] == rejoined["head"]
    assert get(f"{lb}/hello") == (200, "hello world (v1)")
    assert cli(cluster, "plan", "--detailed-exitcode").returncode == 0

    destroyed = cli(cluster, "destroy", "--auto-approve")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    for name in ["lb", "head", "w1"]:
        processes = info.harness.exec(name, "ps -eo args").stdout
        assert "raylet" not in processes and "haproxy" not in processes, (name, processes)
        assert info.harness.exec(name, "ls -A /var/lib/provisioner").stdout.strip() == ""

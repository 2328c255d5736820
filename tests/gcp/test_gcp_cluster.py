"""The GCP provider end to end: the CLI applies ``examples/gcp`` (less its Serve part, see
``tests/gcp/support.py``) against the Compute fake, driven by the real google-cloud-compute
clients. One fake for the module; each test has its own working directory, so its own lineage,
and checks only what that lineage owns."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from tests.checkpoint.servers import gcs_server
from tests.gcp.compute_fake import compute_fake
from tests.gcp.support import GcpBench, cli, empty_census, events, write_workdir

READ_ONLY_POSTS = {"listInstances", "listManagedInstances"}  # POSTs that change nothing


@pytest.fixture(scope="module")
def bench() -> Iterator[GcpBench]:
    with compute_fake() as fake, gcs_server() as gcs:
        yield GcpBench(fake, gcs)


@pytest.fixture
def workdir(bench: GcpBench, tmp_path: Path) -> Path:
    bench.fake.operation_polls_before_done = 1
    return write_workdir(tmp_path / "gcp", bench.variables())


def apply(workdir: Path, bench: GcpBench, *extra: str) -> subprocess.CompletedProcess:
    result = cli(workdir, bench, "apply", "--auto-approve", *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def destroy_leaves_nothing(workdir: Path, bench: GcpBench, *extra: str) -> None:
    lineage = bench.state(workdir)["lineage"]
    result = cli(workdir, bench, "destroy", "--auto-approve", *extra)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert bench.census(lineage) == empty_census()


def force_unlock(workdir: Path, bench: GcpBench) -> None:
    """What an operator does after a run was killed: the next run names the dead run's lock."""
    locked = cli(workdir, bench, "apply", "--auto-approve")
    assert locked.returncode == 3, locked.stdout[-1000:] + locked.stderr
    lock_id = re.search(r"force-unlock (\S+)", locked.stderr).group(1)
    assert cli(workdir, bench, "force-unlock", lock_id).returncode == 0


def calls(bench: GcpBench, since: int) -> Counter:
    return Counter(f"{method} {path.split('?')[0].split('/')[-1] if method != 'GET' else ''}"
                   for method, path in bench.fake.requests[since:])


def test_apply_makes_the_whole_chain_wired(bench: GcpBench, workdir: Path) -> None:
    result = apply(workdir, bench)
    state = bench.state(workdir)
    records = state["resources"]
    census = bench.census(state["lineage"])
    assert {path: len(names) for path, names in census.items() if names} == {
        "global/firewalls": 3, "global/instanceTemplates": 1, "global/healthChecks": 1,
        "global/backendServices": 1, "global/urlMaps": 1, "global/targetHttpProxies": 1,
        "global/forwardingRules": 1, "regions/us-central1/addresses": 1,
        # the head and the group's two workers (labelled by their template)
        "zones/us-central1-a/instances": 3,
        "zones/us-central1-a/instanceGroupManagers": 1, "zones/us-central1-a/instanceGroups": 1,
    }, census

    def get(record: str) -> dict:
        link = records[record]["attributes"]["self_link"]
        return bench.get(link.split(f"projects/{bench.fake.project}/", 1)[1])

    rule, proxy = get("gcp_global_forwarding_rule.main"), get("gcp_target_http_proxy.main")
    url_map, service = get("gcp_url_map.main"), get("gcp_backend_service.serve")
    health, group = get("gcp_health_check.serve"), get("gcp_instance_group_manager.workers")
    # forwarding rule -> proxy -> URL map -> backend service -> the groups, health check
    assert rule["target"] == proxy["selfLink"] and rule["portRange"].startswith("80")
    assert rule["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    assert proxy["urlMap"] == url_map["selfLink"]
    assert url_map["defaultService"] == service["selfLink"]
    assert service["healthChecks"] == [health["selfLink"]] and service["portName"] == "serve"
    groups = {b["group"] for b in service["backends"]}
    assert group["instanceGroup"] in groups
    head_group = get("gcp_instance_group.head")
    assert head_group["selfLink"] in groups
    assert health["httpHealthCheck"]["requestPath"] == "/-/healthz"
    assert health["checkIntervalSec"] * health["unhealthyThreshold"] < 30
    assert not group.get("autoHealingPolicies")  # a 503 from a node without replicas is fine
    assert group["namedPorts"] == [{"name": "serve", "port": 8000}]
    assert group["targetSize"] == 2

    # The head sits at the reserved address; the workers' startup-script points at it.
    address = get("gcp_address.head")
    head = get("gcp_instance.head")
    assert head["networkInterfaces"][0]["networkIP"] == address["address"]
    assert address["status"] == "IN_USE"
    template = get("gcp_instance_template.workers")
    script = next(i["value"] for i in template["properties"]["metadata"]["items"]
                  if i["key"] == "startup-script")
    assert f"echo {address['address']}:6379 > \"$RAY_DIR/head_address\"" in script
    assert state["outputs"]["lb_ip"] == rule["IPAddress"]
    assert f'lb_ip = "{rule["IPAddress"]}"' in result.stdout

    again = cli(workdir, bench, "plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    destroy_leaves_nothing(workdir, bench)


def test_refresh_costs_the_same_for_2_and_50_workers_and_resizing_updates_the_group_only(
        bench: GcpBench, workdir: Path) -> None:
    apply(workdir, bench)
    start = len(bench.fake.requests)
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    with_2 = calls(bench, start)

    scaled = cli(workdir, bench, "plan", "--detailed-exitcode", "--json", "--var", "workers=50")
    assert scaled.returncode == 2, scaled.stdout[-2000:] + scaled.stderr
    changes = [(e["address"], e["action"]) for e in events(scaled.stdout)
               if e["type"] == "planned_change"]
    assert changes == [("gcp_instance_group_manager.workers", "update")]

    start = len(bench.fake.requests)
    apply(workdir, bench, "--var", "workers=50")
    mutating = {path.split("?")[0].rsplit("/", 1)[-1] for method, path in
                bench.fake.requests[start:] if method == "POST" and "/operations/" not in path}
    assert mutating - READ_ONLY_POSTS == {"resize"}, mutating
    bench.fake.settle_groups()
    name = bench.state(workdir)["resources"]["gcp_instance_group_manager.workers"]["attributes"][
        "gce_name"]
    managed = bench.get(f"zones/us-central1-a/instanceGroupManagers/{name}")
    assert managed["targetSize"] == 50

    start = len(bench.fake.requests)
    assert cli(workdir, bench, "plan", "--detailed-exitcode", "--var",
               "workers=50").returncode == 0
    with_50 = calls(bench, start)
    print(f"refresh calls: 2 workers {sum(with_2.values())}, 50 workers "
          f"{sum(with_50.values())}")
    assert with_50 == with_2
    destroy_leaves_nothing(workdir, bench, "--var", "workers=50")


def test_an_apply_killed_while_waiting_on_operations_is_adopted(bench: GcpBench,
                                                                workdir: Path) -> None:
    fake = bench.fake
    fake.operation_polls_before_done = 10**6  # nothing finishes until the test says so
    start = len(fake.requests)
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "apply", "--auto-approve", "--var-file",
         "gcp.json"], cwd=workdir, env=bench.env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(m == "POST" and "addresses" in p for m, p in fake.requests[start:]):
            assert time.monotonic() < deadline, "the apply never inserted the address"
            time.sleep(0.05)
        time.sleep(1.0)  # its operation is being waited on
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    inserted = Counter(path.split("?")[0].rsplit("/", 1)[-1] for method, path
                       in fake.requests[start:] if method == "POST")
    fake.operation_polls_before_done = 1
    fake.finish_operations()  # the inserts the dead run started complete anyway
    state = bench.state(workdir)
    assert {p["address"] for p in state["pending"]} >= {"gcp_address.head"}

    force_unlock(workdir, bench)
    result = apply(workdir, bench)
    assert "adopted" in result.stdout + result.stderr
    census = bench.census(state["lineage"])
    assert len(census["regions/us-central1/addresses"]) == 1
    assert len(census["global/firewalls"]) == 3
    assert inserted["addresses"] == 1
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    destroy_leaves_nothing(workdir, bench)


def test_throttling_and_server_errors_are_retried_as_events(bench: GcpBench,
                                                            workdir: Path) -> None:
    fake = bench.fake
    fake.inject(429, method="insert", collection="firewalls", times=2)
    fake.inject(503, method="insert", collection="instanceGroupManagers", times=1)
    fake.inject(500, method="list", collection="healthChecks", times=1)
    result = apply(workdir, bench, "--json")
    retries = [e for e in events(result.stdout) if e["type"] == "provider_retry"]
    seen = Counter(e["data"]["operation"] for e in retries)
    assert seen["Firewalls.insert_unary"] == 2
    assert seen["InstanceGroupManagers.insert_unary"] == 1
    assert seen["HealthChecks.list"] >= 1
    assert all(e["level"] == "warn" for e in retries)
    census = bench.census(bench.state(workdir)["lineage"])
    assert len(census["global/firewalls"]) == 3  # retried inserts made no duplicates
    assert len(census["zones/us-central1-a/instanceGroupManagers"]) == 1
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    destroy_leaves_nothing(workdir, bench)


def test_a_regional_group_behind_a_passthrough_network_lb(bench: GcpBench,
                                                          tmp_path: Path) -> None:
    workdir = write_workdir(tmp_path / "gcp", bench.variables(lb_type="network",
                                                              regional_workers=True))
    apply(workdir, bench)
    records = bench.state(workdir)["resources"]
    assert "gcp_region_instance_group_manager.workers" in records
    rule = records["gcp_forwarding_rule.main"]["attributes"]
    service = records["gcp_region_backend_service.serve"]["attributes"]
    assert rule["backend_service"] == service["self_link"]
    assert (service["protocol"], service["load_balancing_scheme"]) == ("TCP", "EXTERNAL")
    assert {b["balancing_mode"] for b in service["backends"]} == {"CONNECTION"}
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    destroy_leaves_nothing(workdir, bench)


def test_recover_replaces_the_lost_head_at_the_same_address(bench: GcpBench,
                                                            workdir: Path) -> None:
    apply(workdir, bench)
    records = bench.state(workdir)["resources"]
    head = records["gcp_instance.head"]["attributes"]
    ip = records["gcp_address.head"]["attributes"]["ip"]
    from google.cloud import compute_v1

    # The head is lost: deleted behind our back.
    bench.fake.client(compute_v1.InstancesClient).delete(
        project=bench.fake.project, zone="us-central1-a", instance=head["gce_name"]).result()

    start = len(bench.fake.requests)
    result = cli(workdir, bench, "recover", "--auto-approve", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert {"head_lost", "recover_complete"} <= {e["type"] for e in events(result.stdout)}
    changed = {path.split("?")[0].split("/projects/")[1].split("/")[3]
               for method, path in bench.fake.requests[start:]
               if method in ("POST", "DELETE", "PATCH") and "/operations/" not in path
               and path.split("?")[0].rsplit("/", 1)[-1] not in READ_ONLY_POSTS}
    # the instance and its place in the head's group; nothing of the workers or the LB chain
    assert changed <= {"instances", "instanceGroups"}, changed
    after = bench.state(workdir)["resources"]
    new_head = bench.get(f"zones/us-central1-a/instances/{after['gcp_instance.head']['attributes']['gce_name']}")
    assert new_head["networkInterfaces"][0]["networkIP"] == ip
    assert after["gcp_instance_group_manager.workers"] == records[
        "gcp_instance_group_manager.workers"]
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    destroy_leaves_nothing(workdir, bench)


def test_an_operation_that_fails_is_a_clear_error(bench: GcpBench, workdir: Path) -> None:
    bench.fake.fail_next_insert("instances", "ZONE_RESOURCE_POOL_EXHAUSTED",
                                "The zone 'projects/test-project/zones/us-central1-a' does not "
                                "have enough resources available to fulfill the request.")
    result = cli(workdir, bench, "apply", "--auto-approve")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "gcp_instance.head" in output and "ZONE_RESOURCE_POOL_EXHAUSTED" in output
    assert "try another zone or machine type" in output
    # The rest is recorded; the next apply makes only the head and what needs it.
    records = bench.state(workdir)["resources"]
    assert "gcp_address.head" in records and "gcp_instance.head" not in records
    apply(workdir, bench)
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    destroy_leaves_nothing(workdir, bench)


def test_a_new_worker_template_is_made_before_the_old_goes_and_no_node_restarts(
        bench: GcpBench, workdir: Path) -> None:
    apply(workdir, bench)
    before = bench.state(workdir)["resources"]
    new_type = ("--var", "worker_machine_type=n2-standard-8")
    planned = cli(workdir, bench, "plan", "--json", *new_type)
    changes = {e["address"]: e["action"] for e in events(planned.stdout)
               if e["type"] == "planned_change"}
    assert changes == {"gcp_instance_template.workers": "replace",
                       "gcp_instance_group_manager.workers": "update"}, changes
    start = len(bench.fake.requests)
    apply(workdir, bench, *new_type)
    writes = [(method, path.split("?")[0].split("/projects/")[1].split("/", 2)[-1])
              for method, path in bench.fake.requests[start:]
              if method in ("POST", "PATCH", "DELETE") and "/operations/" not in path]
    # the new template first, then the group moves to it, then the old template goes
    order = [w for w in writes if "instanceTemplates" in w[1] or "instanceGroupManagers" in w[1]]
    assert [m for m, _ in order] == ["POST", "PATCH", "DELETE"], writes
    after = bench.state(workdir)["resources"]
    assert after["gcp_instance.head"] == before["gcp_instance.head"]
    name = after["gcp_instance_group_manager.workers"]["attributes"]["gce_name"]
    managed = bench.get(f"zones/us-central1-a/instanceGroupManagers/{name}")
    assert managed["instanceTemplate"].endswith(
        after["gcp_instance_template.workers"]["attributes"]["gce_name"])
    assert managed["updatePolicy"]["type"] == "OPPORTUNISTIC"
    assert cli(workdir, bench, "plan", "--detailed-exitcode", *new_type).returncode == 0
    destroy_leaves_nothing(workdir, bench, *new_type)


def test_a_template_moved_aside_by_a_killed_apply_is_deleted_by_the_next(
        bench: GcpBench, workdir: Path) -> None:
    apply(workdir, bench)
    lineage = bench.state(workdir)["lineage"]
    new_type = ("--var", "worker_machine_type=n2-standard-8")
    start = len(bench.fake.requests)
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "apply", "--auto-approve", "--var-file",
         "gcp.json", *new_type], cwd=workdir, env=bench.env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(m == "PATCH" for m, _ in bench.fake.requests[start:]):
            assert time.monotonic() < deadline, "the apply never moved the group"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # the new template exists, the old is not deleted
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert any(a.endswith("#deposed") for a in bench.state(workdir)["resources"])
    assert len(bench.census(lineage)["global/instanceTemplates"]) == 2

    force_unlock(workdir, bench)
    apply(workdir, bench, *new_type)
    assert len(bench.census(lineage)["global/instanceTemplates"]) == 1
    assert not any(a.endswith("#deposed") for a in bench.state(workdir)["resources"])
    assert cli(workdir, bench, "plan", "--detailed-exitcode", *new_type).returncode == 0
    destroy_leaves_nothing(workdir, bench, *new_type)


def test_two_applies_at_once_on_gcs_state_one_holds_the_lock_no_update_is_lost(
        bench: GcpBench, workdir: Path) -> None:
    command = [sys.executable, "-m", "provisioner", "apply", "--auto-approve", "--var-file",
               "gcp.json"]
    runs = [subprocess.Popen(command, cwd=workdir, env=bench.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
            for _ in range(2)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    assert sorted(code for code, _, _ in results) == [0, 3], [
        (code, err[-1500:]) for code, _, err in results]
    loser = next(err for code, _, err in results if code == 3)
    assert "held by" in loser and "Traceback" not in loser
    stored = bench.state(workdir)
    assert not stored["pending"] and len(stored["resources"]) == 13
    census = bench.census(stored["lineage"])
    assert census["global/firewalls"] == sorted(
        r["attributes"]["gce_name"] for a, r in stored["resources"].items()
        if a.startswith("gcp_firewall."))
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    destroy_leaves_nothing(workdir, bench)

"""The AWS provider end to end: the CLI applies ``examples/aws`` (less its Serve part, see
``tests/aws/support.py``) against moto in server mode, every call through the fault proxy, which
counts calls and injects throttling and 5xx answers.

One moto server for the module; each test has its own working directory, so its own state
lineage, and checks only what that lineage owns.
"""

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

from tests.aws.faultproxy import FaultProxy
from tests.aws.support import STATE_KEY, AwsBench, cli, events, write_workdir
from tests.checkpoint.servers import moto_server

KINDS = ("security_groups", "network_interfaces", "launch_templates", "instances",
         "auto_scaling_groups", "load_balancing")


@pytest.fixture(scope="module")
def bench() -> Iterator[AwsBench]:
    with moto_server() as env, FaultProxy(env["AWS_ENDPOINT_URL"]) as proxy:
        yield AwsBench(env, proxy)


@pytest.fixture
def workdir(bench: AwsBench, tmp_path: Path) -> Path:
    bench.proxy.reset()
    return write_workdir(tmp_path / "aws", bench.network())


def apply(workdir: Path, bench: AwsBench, *extra: str) -> subprocess.CompletedProcess:
    result = cli(workdir, bench, "apply", "--auto-approve", *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def list_calls(bench: AwsBench) -> Counter:
    """The infrastructure calls the proxy saw (S3 carries the state: not counted)."""
    return Counter((c.service, c.operation) for c in bench.proxy.calls if c.service != "s3")


def test_apply_makes_the_whole_cluster_tagged_and_wired(bench: AwsBench, workdir: Path) -> None:
    result = apply(workdir, bench)
    state = bench.state(workdir)
    lineage = state["lineage"]
    census = bench.census(lineage)
    assert {kind: len(census[kind]) for kind in KINDS} == {
        "security_groups": 2, "network_interfaces": 1, "launch_templates": 2,
        # the head and the group's two workers (the group's tags propagate to them)
        "instances": 3, "auto_scaling_groups": 1,
        "load_balancing": 3,  # the load balancer, its target group and its listener
    }, census

    records = state["resources"]
    group_name = records["aws_autoscaling_group.workers"]["id"]
    group = bench.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[group_name])["AutoScalingGroups"][0]
    target_group = records["aws_lb_target_group.serve"]["id"]
    assert group["TargetGroupARNs"] == [target_group]
    assert group["HealthCheckType"] == "EC2"
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (1, 2, 10)
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert tags["provisioner:lineage"] == lineage
    assert tags["provisioner:cluster"] == "awsdemo"
    assert tags["provisioner:address"] == "aws_autoscaling_group.workers"
    assert tags["provisioner:token"] == records["aws_autoscaling_group.workers"]["token"]

    elb = bench.client("elbv2")
    health = elb.describe_target_groups(TargetGroupArns=[target_group])["TargetGroups"][0]
    assert health["HealthCheckPath"] == "/-/healthz"
    assert health["HealthCheckIntervalSeconds"] * health["UnhealthyThresholdCount"] < 30
    listener = elb.describe_listeners(
        LoadBalancerArn=records["aws_lb.main"]["id"])["Listeners"][0]
    assert listener["DefaultActions"][0]["TargetGroupArn"] == target_group
    head = records["aws_instance.head"]["id"]
    targets = {d["Target"]["Id"] for d in
               elb.describe_target_health(TargetGroupArn=target_group)["TargetHealthDescriptions"]}
    assert head in targets
    idle = {a["Key"]: a["Value"] for a in elb.describe_load_balancer_attributes(
        LoadBalancerArn=records["aws_lb.main"]["id"])["Attributes"]}
    assert idle["idle_timeout.timeout_seconds"] == "60"

    # The head sits on the interface that outlives it.
    eni = records["aws_network_interface.head"]
    instance = bench.client("ec2").describe_instances(InstanceIds=[head])["Reservations"][0][
        "Instances"][0]
    assert instance["NetworkInterfaces"][0]["NetworkInterfaceId"] == eni["id"]
    assert state["outputs"]["head_address"] == f"{eni['attributes']['address']}:6379"

    dns = records["aws_lb.main"]["attributes"]["dns_name"]
    assert dns and state["outputs"]["lb_dns_name"] == dns
    assert f"lb_dns_name = \"{dns}\"" in result.stdout

    # The workers' user-data holds the head's kept address and starts our supervisor.
    import base64

    template = records["aws_launch_template.workers"]["id"]
    data = bench.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=template)["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    script = base64.b64decode(data["UserData"]).decode()
    assert f"echo {eni['attributes']['address']}:6379 > \"$RAY_DIR/head_address\"" in script
    assert "systemctl enable --now provisioner-ray.service" in script

    again = cli(workdir, bench, "plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr

    cli(workdir, bench, "destroy", "--auto-approve")
    assert bench.census(lineage) == {kind: [] for kind in KINDS}


def test_refresh_costs_the_same_for_2_and_50_workers_and_scaling_updates_the_group_only(
        bench: AwsBench, workdir: Path) -> None:
    apply(workdir, bench)
    bench.proxy.reset()
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    with_2 = list_calls(bench)

    scaled = cli(workdir, bench, "plan", "--detailed-exitcode", "--json", "--var", "workers=50",
                 "--var", "max_workers=60")
    assert scaled.returncode == 2, scaled.stdout[-2000:] + scaled.stderr
    changes = [e for e in events(scaled.stdout) if e["type"] == "planned_change"]
    assert [(c["address"], c["action"]) for c in changes] == [
        ("aws_autoscaling_group.workers", "update")], changes

    bench.proxy.reset()
    apply(workdir, bench, "--var", "workers=50", "--var", "max_workers=60")
    mutating = {op for (service, op) in list_calls(bench)
                if not op.startswith(("Describe", "List", "Get"))}
    assert mutating == {"UpdateAutoScalingGroup"}, mutating
    group = bench.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[
        bench.state(workdir)["resources"]["aws_autoscaling_group.workers"]["id"]])[
        "AutoScalingGroups"][0]
    assert (group["DesiredCapacity"], len(group["Instances"])) == (50, 50)

    bench.proxy.reset()
    assert cli(workdir, bench, "plan", "--detailed-exitcode", "--var", "workers=50",
               "--var", "max_workers=60").returncode == 0
    with_50 = list_calls(bench)
    print(f"refresh calls: 2 workers {sum(with_2.values())}, 50 workers "
          f"{sum(with_50.values())}: {dict(with_50)}")
    assert with_50 == with_2
    cli(workdir, bench, "destroy", "--auto-approve", "--var", "workers=50",
        "--var", "max_workers=60")


def test_an_apply_killed_after_creating_a_launch_template_is_adopted(
        bench: AwsBench, workdir: Path) -> None:
    hold = bench.proxy.hold_answer(service="ec2", operation="CreateLaunchTemplate")
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "apply", "--auto-approve", "--var-file",
         "aws.json"], cwd=workdir, env=bench.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert hold.reached.wait(60), "the apply never created a launch template"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        hold.release.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    state = bench.state(workdir)
    lineage = state["lineage"]
    pending = {(p["address"], p["action"]) for p in state["pending"]}
    held = [a for a, action in pending if a.startswith("aws_launch_template.")]
    assert len(held) >= 1, state["pending"]
    before = bench.census(lineage)["launch_templates"]
    assert len(before) >= 1

    # The dead run's lock is still there: the next run says so, and the operator lifts it.
    locked = cli(workdir, bench, "apply", "--auto-approve")
    assert locked.returncode == 3, locked.stdout + locked.stderr
    lock_id = re.search(r"force-unlock (\S+)", locked.stderr).group(1)
    assert cli(workdir, bench, "force-unlock", lock_id).returncode == 0

    result = apply(workdir, bench)
    assert "adopted" in result.stdout + result.stderr
    after = bench.census(lineage)
    assert sorted(after["launch_templates"]) == sorted(set(after["launch_templates"]))
    assert len(after["launch_templates"]) == 2, after
    assert set(before) <= set(after["launch_templates"])  # adopted, not made again
    records = bench.state(workdir)["resources"]
    assert {records["aws_launch_template.head"]["id"],
            records["aws_launch_template.workers"]["id"]} == set(after["launch_templates"])
    assert len(after["security_groups"]) == 2 and len(after["network_interfaces"]) == 1
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    cli(workdir, bench, "destroy", "--auto-approve")
    assert bench.census(lineage) == {kind: [] for kind in KINDS}


def test_throttling_and_server_errors_are_retried_as_events(bench: AwsBench,
                                                            workdir: Path) -> None:
    proxy = bench.proxy
    proxy.inject(service="ec2", operation="CreateSecurityGroup", status=400,
                 code="RequestLimitExceeded", times=2)
    proxy.inject(service="elasticloadbalancing", operation="CreateLoadBalancer", status=503,
                 times=1)
    proxy.inject(service="autoscaling", operation="CreateAutoScalingGroup", status=400,
                 code="Throttling", times=1)
    proxy.inject(service="ec2", operation="DescribeSecurityGroups", status=500, times=1)
    started = time.monotonic()
    result = apply(workdir, bench, "--json")
    retries = [e for e in events(result.stdout) if e["type"] == "provider_retry"]
    seen = Counter(e["data"]["operation"] for e in retries)
    assert seen["create_security_group"] == 2
    assert seen["create_load_balancer"] == 1
    assert seen["create_auto_scaling_group"] == 1
    assert seen["describe_security_groups"] >= 1
    assert proxy.injected == 5
    assert all(e["level"] == "warn" for e in retries)
    print(f"apply with 5 injected faults: {time.monotonic() - started:.1f}s, retries {dict(seen)}")
    lineage = bench.state(workdir)["lineage"]
    census = bench.census(lineage)
    assert len(census["security_groups"]) == 2  # retried creates made no duplicates
    assert len(census["auto_scaling_groups"]) == 1
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    cli(workdir, bench, "destroy", "--auto-approve")
    assert bench.census(lineage) == {kind: [] for kind in KINDS}


def test_recover_replaces_the_lost_head_behind_the_same_address(bench: AwsBench,
                                                                workdir: Path) -> None:
    apply(workdir, bench)
    before = bench.state(workdir)
    records = before["resources"]
    old_head = records["aws_instance.head"]["id"]
    eni = records["aws_network_interface.head"]
    target_group = records["aws_lb_target_group.serve"]["id"]
    ec2 = bench.client("ec2")
    ec2.terminate_instances(InstanceIds=[old_head])  # the head is lost

    bench.proxy.reset()
    result = cli(workdir, bench, "recover", "--auto-approve", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    kinds = {e["type"] for e in events(result.stdout)}
    assert {"head_lost", "recover_complete"} <= kinds
    mutating = Counter(op for (_, op) in list_calls(bench)
                       if not op.startswith(("Describe", "List", "Get")))
    # Only the head and its registration: the workers, the group and the LB stay as they are.
    assert set(mutating) <= {"RunInstances", "TerminateInstances", "RegisterTargets",
                             "DeregisterTargets"}, mutating
    assert mutating["RunInstances"] == 1

    after = bench.state(workdir)["resources"]
    new_head = after["aws_instance.head"]["id"]
    assert new_head != old_head
    instance = ec2.describe_instances(InstanceIds=[new_head])["Reservations"][0]["Instances"][0]
    assert instance["NetworkInterfaces"][0]["NetworkInterfaceId"] == eni["id"]
    assert instance["PrivateIpAddress"] == eni["attributes"]["address"]
    targets = {d["Target"]["Id"] for d in bench.client("elbv2").describe_target_health(
        TargetGroupArn=target_group)["TargetHealthDescriptions"]}
    assert new_head in targets and old_head not in targets
    assert after["aws_autoscaling_group.workers"] == records["aws_autoscaling_group.workers"]
    assert bench.state(workdir)["history"]["recoveries"][-1]["checkpoint"] is None
    assert cli(workdir, bench, "plan", "--detailed-exitcode").returncode == 0
    cli(workdir, bench, "destroy", "--auto-approve")
    assert bench.census(before["lineage"]) == {kind: [] for kind in KINDS}


def test_a_network_load_balancer_when_the_spec_asks(bench: AwsBench, workdir: Path) -> None:
    apply(workdir, bench, "--var", "lb_type=network")
    state = bench.state(workdir)
    records = state["resources"]
    elb = bench.client("elbv2")
    lb = elb.describe_load_balancers(LoadBalancerArns=[records["aws_lb.main"]["id"]])[
        "LoadBalancers"][0]
    assert lb["Type"] == "network"
    group = elb.describe_target_groups(TargetGroupArns=[
        records["aws_lb_target_group.serve"]["id"]])["TargetGroups"][0]
    # TCP passthrough to Serve, but the health check still asks Serve over HTTP.
    assert (group["Protocol"], group["HealthCheckProtocol"], group["HealthCheckPath"]) == (
        "TCP", "HTTP", "/-/healthz")
    listener = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"][0]
    assert listener["Protocol"] == "TCP"
    assert cli(workdir, bench, "plan", "--detailed-exitcode", "--var",
               "lb_type=network").returncode == 0
    cli(workdir, bench, "destroy", "--auto-approve", "--var", "lb_type=network")
    assert bench.census(state["lineage"]) == {kind: [] for kind in KINDS}


def test_two_applies_at_once_on_s3_state_one_holds_the_lock_no_update_is_lost(
        bench: AwsBench, workdir: Path) -> None:
    import json

    bucket = json.loads((workdir / "aws.json").read_text())["bucket"]
    command = [sys.executable, "-m", "provisioner", "apply", "--auto-approve", "--var-file",
               "aws.json"]
    runs = [subprocess.Popen(command, cwd=workdir, env=bench.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
            for _ in range(2)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], [(code, err[-1500:]) for code, _, err in results]
    loser = next(err for code, _, err in results if code == 3)
    assert "lock" in loser and "held by" in loser, loser
    assert "Traceback" not in loser

    stored = bench.state(workdir)
    assert not stored["pending"]
    records = stored["resources"]
    assert len(records) == 11
    # Everything that exists is recorded: the loser made nothing, the winner lost nothing.
    census = bench.census(stored["lineage"])
    assert sorted(census["security_groups"]) == sorted(
        r["id"] for a, r in records.items() if a.startswith("aws_security_group."))
    assert census["auto_scaling_groups"] == [records["aws_autoscaling_group.workers"]["id"]]
    assert bench.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{STATE_KEY}.lock").get(
        "KeyCount") == 0  # released

    plan = cli(workdir, bench, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr
    cli(workdir, bench, "destroy", "--auto-approve")
    assert bench.census(stored["lineage"]) == {kind: [] for kind in KINDS}

"""The AWS test bench: moto in server mode behind the fault proxy, the example spec in a
working directory, the CLI as a subprocess, and a census of everything our lineage owns.

moto's instances run nothing, so the Serve half of ``examples/aws`` cannot be applied here: the
bench's copy of the example leaves out its ``serve:`` section. Everything else is the example as
shipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.aws.faultproxy import FaultProxy
from tests.support import json_events, run_cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "aws" / "cluster.yaml"
REGION = "us-east-1"
STATE_KEY = "awsdemo/state.json"  # the example's state.key


@dataclass
class AwsBench:
    moto_env: dict[str, str]
    proxy: FaultProxy

    @property
    def env(self) -> dict[str, str]:
        """The environment of a CLI run: every AWS call through the proxy."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        env.update(self.moto_env)
        env["AWS_ENDPOINT_URL"] = self.proxy.url
        return env

    def client(self, service: str, *, direct: bool = True):
        """A boto3 client straight to moto (not counted by the proxy) unless ``direct=False``."""
        import boto3

        return boto3.client(service, region_name=REGION,
                            endpoint_url=self.moto_env["AWS_ENDPOINT_URL"] if direct
                            else self.proxy.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def network(self) -> dict[str, Any]:
        """The example's variables: moto's default VPC, two of its subnets, an image and a new
        bucket (state, checkpoints)."""
        ec2 = self.client("ec2")
        vpc = next(v for v in ec2.describe_vpcs()["Vpcs"] if v.get("IsDefault"))
        subnets = sorted(ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [
            vpc["VpcId"]]}])["Subnets"], key=lambda s: s["AvailabilityZone"])
        image = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
        bucket = f"state-{uuid.uuid4().hex[:12]}"
        self.client("s3").create_bucket(Bucket=bucket)
        return {"region": REGION, "vpc_id": vpc["VpcId"],
                "subnets": [s["SubnetId"] for s in subnets[:2]], "image_id": image,
                "operator_cidr": "127.0.0.1/32", "bucket": bucket}

    def state(self, workdir: Path) -> dict[str, Any]:
        """The state document as stored in the example's S3 state object."""
        bucket = json.loads((workdir / "aws.json").read_text())["bucket"]
        body = self.client("s3").get_object(Bucket=bucket, Key=STATE_KEY)["Body"].read()
        return json.loads(body)

    def census(self, lineage: str) -> dict[str, list[str]]:
        """Everything tagged with ``lineage``, by kind, listed the way an auditor would."""
        tag = [{"Name": "tag:provisioner:lineage", "Values": [lineage]}]
        ec2, asg, elb = self.client("ec2"), self.client("autoscaling"), self.client("elbv2")
        found: dict[str, list[str]] = {
            "security_groups": [g["GroupId"] for g in
                                ec2.describe_security_groups(Filters=tag)["SecurityGroups"]],
            "network_interfaces": [n["NetworkInterfaceId"] for n in
                                   ec2.describe_network_interfaces(Filters=tag)[
                                       "NetworkInterfaces"]],
            "launch_templates": [t["LaunchTemplateId"] for t in
                                 ec2.describe_launch_templates(Filters=tag)["LaunchTemplates"]],
            "instances": [i["InstanceId"] for r in ec2.describe_instances(Filters=tag + [
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping",
                                                           "stopped"]}])["Reservations"]
                          for i in r["Instances"]],
            "auto_scaling_groups": [g["AutoScalingGroupName"] for g in
                                    asg.describe_auto_scaling_groups(Filters=tag)[
                                        "AutoScalingGroups"]],
        }
        arns = ([lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]]
                + [tg["TargetGroupArn"] for tg in elb.describe_target_groups()["TargetGroups"]])
        for lb in elb.describe_load_balancers()["LoadBalancers"]:
            arns += [ls["ListenerArn"] for ls in
                     elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]]
        ours = []
        for start in range(0, len(arns), 20):
            for description in elb.describe_tags(ResourceArns=arns[start:start + 20])[
                    "TagDescriptions"]:
                if {"Key": "provisioner:lineage", "Value": lineage} in description["Tags"]:
                    ours.append(description["ResourceArn"])
        found["load_balancing"] = sorted(ours)
        return found


def write_workdir(directory: Path, variables: dict[str, Any]) -> Path:
    """The example (without ``serve:``) and a variables file in ``directory``."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec.pop("serve", None)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cluster.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (directory / "aws.json").write_text(json.dumps(variables))
    return directory


def cli(workdir: Path, bench: AwsBench, *args: str, timeout: float = 300
        ) -> subprocess.CompletedProcess:
    return run_cli(workdir, bench.env, *args, "--var-file", "aws.json", timeout=timeout)


events = json_events

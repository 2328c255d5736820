"""``aws_autoscaling_group``: the workers. See provisioner.providers.base for the contract.

The group's health check type is EC2 and nothing else: a Serve node without replicas answers 503
on ``/-/healthz`` by design (it is draining), and an ELB health check type would make the group
terminate healthy nodes for it. The load balancer's target group only routes on that check.

``list`` is one ``DescribeAutoScalingGroups`` per region filtered by the lineage tag; the
group's instances come in the same answer, so its cost does not grow with the workers.
"""

from __future__ import annotations

from typing import Any

from provisioner.errors import ProviderError
from provisioner.providers.aws.common import (
    TAG_ADDRESS,
    TAG_TOKEN,
    AwsType,
    lineage_filter,
    tag_dict,
)
from provisioner.providers.cloud import ignore_codes, known_by_address, regions
from provisioner.providers.base import ListScope, LiveResource

GONE = frozenset({"ValidationError"})  # "AutoScalingGroup name not found"


class AutoScalingGroup(AwsType):
    """Attributes: region, name, launch_template_id, launch_template_version, min_size,
    max_size, desired_capacity, subnet_ids, target_group_arns, health_check_type (must be EC2),
    health_check_grace_s; computed id (the group's name), aws_name, instances."""

    type_name = "aws_autoscaling_group"
    service = "autoscaling"
    force_new = frozenset({"region", "name"})
    computed = frozenset({"id", "aws_name", "instances"})
    ignore_drift = frozenset({"instances"})

    def list(self, scope: ListScope) -> list[LiveResource]:
        known = known_by_address(scope)
        found = []
        for region in regions(scope):
            for group in self.pages(region, "describe_auto_scaling_groups", "AutoScalingGroups",
                                    Filters=lineage_filter(self.ctx.owner)):
                tags = tag_dict(group.get("Tags"))
                if not self.owns(tags):
                    continue
                recorded = known.get(tags[TAG_ADDRESS])
                found.append(self._from_group(region, group, recorded.attributes
                                              if recorded else {}, tags))
        return found

    def _from_group(self, region: str, group: dict[str, Any], recorded: dict[str, Any],
                    tags: dict[str, str]) -> LiveResource:
        template = group.get("LaunchTemplate") or {}
        version = template.get("Version")
        name = group["AutoScalingGroupName"]
        attributes = {
            "region": region,
            "name": recorded.get("name", name),
            "launch_template_id": template.get("LaunchTemplateId"),
            "launch_template_version": int(version) if str(version).isdigit() else version,
            "min_size": group["MinSize"], "max_size": group["MaxSize"],
            "desired_capacity": group["DesiredCapacity"],
            "subnet_ids": sorted(s for s in (group.get("VPCZoneIdentifier") or "").split(",")
                                 if s),
            "target_group_arns": sorted(group.get("TargetGroupARNs") or []),
            "health_check_type": group.get("HealthCheckType"),
            "health_check_grace_s": group.get("HealthCheckGracePeriod"),
            "id": name, "aws_name": name,
            "instances": sorted(i["InstanceId"] for i in group.get("Instances") or []),
        }
        return LiveResource(tags[TAG_ADDRESS], name, attributes, tags.get(TAG_TOKEN))

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        _check_health_type(address, desired)
        region, name = desired["region"], self.name_of(desired, 255)
        existing = self._get(region, name)
        if existing is not None:
            tags = tag_dict(existing.get("Tags"))
            if tags.get(TAG_TOKEN) != token:
                raise ProviderError(f"an Auto Scaling group named {name} already exists and "
                                    "is not this create's", address=address,
                                    hint="remove it or rename the group in the spec")
            # An earlier attempt of this create got through: bring it to what is wanted.
            return self.update(address, self._from_group(region, existing, desired, tags),
                               desired)
        self.call(
            region, "create_auto_scaling_group", address=address, AutoScalingGroupName=name,
            LaunchTemplate=self._template(desired), **self._sizes(desired),
            VPCZoneIdentifier=",".join(sorted(desired["subnet_ids"])),
            TargetGroupARNs=sorted(desired.get("target_group_arns") or []),
            HealthCheckType="EC2", HealthCheckGracePeriod=int(desired.get("health_check_grace_s")
                                                              or 0),
            Tags=[{"Key": key, "Value": value, "PropagateAtLaunch": True,
                   "ResourceId": name, "ResourceType": "auto-scaling-group"}
                  for key, value in sorted(self.tags(address, token).items())],
        )
        return self._settled(address, desired, name, token)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        _check_health_type(address, desired)
        region, name = desired["region"], prior.id
        self.call(region, "update_auto_scaling_group", address=address,
                  AutoScalingGroupName=name, LaunchTemplate=self._template(desired),
                  **self._sizes(desired),
                  VPCZoneIdentifier=",".join(sorted(desired["subnet_ids"])),
                  HealthCheckType="EC2",
                  HealthCheckGracePeriod=int(desired.get("health_check_grace_s") or 0))
        have = set(prior.attributes.get("target_group_arns") or [])
        want = set(desired.get("target_group_arns") or [])
        if want - have:
            self.call(region, "attach_load_balancer_target_groups", address=address,
                      AutoScalingGroupName=name, TargetGroupARNs=sorted(want - have))
        if have - want:
            self.call(region, "detach_load_balancer_target_groups", address=address,
                      AutoScalingGroupName=name, TargetGroupARNs=sorted(have - want))
        return self._settled(address, desired, name, prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        region, name = prior.attributes["region"], prior.id
        if ignore_codes(GONE, lambda: self.call(region, "delete_auto_scaling_group",
                                                address=address, AutoScalingGroupName=name,
                                                ForceDelete=True)) is None:
            return
        # The group goes once its instances are terminated; until then its launch template
        # and security groups are in use.
        self.wait_for(address, f"group {name} and its instances to go",
                      lambda: self._get(region, name) is None or None, interval_s=5)

    def _get(self, region: str, name: str) -> dict[str, Any] | None:
        groups = self.call(region, "describe_auto_scaling_groups",
                           AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return groups[0] if groups else None

    def _settled(self, address: str, desired: dict[str, Any], name: str,
                 token: str | None) -> LiveResource:
        group = self._get(desired["region"], name) or {}
        instances = sorted(i["InstanceId"] for i in group.get("Instances") or [])
        attributes = {**desired, "subnet_ids": sorted(desired["subnet_ids"]),
                      "target_group_arns": sorted(desired.get("target_group_arns") or []),
                      "id": name, "aws_name": name, "instances": instances}
        return LiveResource(address, name, attributes, token)

    @staticmethod
    def _template(desired: dict[str, Any]) -> dict[str, str]:
        return {"LaunchTemplateId": desired["launch_template_id"],
                "Version": str(desired["launch_template_version"])}

    @staticmethod
    def _sizes(desired: dict[str, Any]) -> dict[str, int]:
        return {"MinSize": int(desired["min_size"]), "MaxSize": int(desired["max_size"]),
                "DesiredCapacity": int(desired["desired_capacity"])}


def _check_health_type(address: str, desired: dict[str, Any]) -> None:
    if desired.get("health_check_type", "EC2") != "EC2":
        raise ProviderError(
            f"health_check_type must be EC2, not {desired['health_check_type']!r}",
            address=address,
            hint="a Serve node without replicas answers 503 on /-/healthz by design; an ELB "
                 "health check would make the group replace healthy nodes")

"""EC2 resource types: security groups, the head's network interface, launch templates and the
head instance. See provisioner.providers.base for the contract and
:mod:`provisioner.providers.aws.common` for ownership tags and names.

Each ``list`` is one ``Describe*`` call per region filtered by the lineage tag (paginated), so
its cost does not grow with the number of resources. Each ``create`` first looks for a resource
carrying its token (an earlier attempt that got through), then passes the token to EC2 where the
call takes a ``ClientToken``.
"""

from __future__ import annotations

import base64
from typing import Any, Mapping

from provisioner.errors import ProviderError
from provisioner.providers.aws.common import (
    TAG_ADDRESS,
    TAG_TOKEN,
    AwsType,
    lineage_filter,
    tag_dict,
    tag_list,
)
from provisioner.providers.cloud import (
    ignore_codes,
    in_known_order,
    known_by_address,
    regions,
)
from provisioner.providers.base import ListScope, LiveResource
from provisioner.providers.bootstrap import bootstrap_behind, render_bootstrap
from provisioner.providers.cloud import dashboard_gcs_health

GONE_SG = frozenset({"InvalidGroup.NotFound", "InvalidGroupId.NotFound"})
GONE_ENI = frozenset({"InvalidNetworkInterfaceID.NotFound"})
GONE_LT = frozenset({"InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFound",
                     "InvalidLaunchTemplateId.Malformed"})
GONE_INSTANCE = frozenset({"InvalidInstanceID.NotFound"})
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


class _Ec2Type(AwsType):
    service = "ec2"

    def _describe(self, scope: ListScope, operation: str, key: str) -> list[tuple[str, dict]]:
        """(region, item) of every item of ours, one paginated call per region."""
        found = []
        for region in regions(scope):
            for item in self.pages(region, operation, key,
                                   Filters=lineage_filter(self.ctx.owner)):
                if self.owns(tag_dict(item.get("Tags") or item.get("TagSet"))):
                    found.append((region, item))
        return found

    def _tag_specs(self, resource_type: str, address: str, token: str) -> list[dict[str, Any]]:
        return [{"ResourceType": resource_type, "Tags": tag_list(self.tags(address, token))}]


# -- security groups ------------------------------------------------------------------------


def rule_key(rule: Mapping[str, Any]) -> tuple:
    return (str(rule.get("protocol")), int(rule.get("from_port") or 0),
            int(rule.get("to_port") or 0), str(rule.get("cidr") or ""),
            str(rule.get("source") or ""), bool(rule.get("self")),
            str(rule.get("description") or ""))


def _rule(protocol: str, low: int, high: int, *, cidr: str | None = None,
          source: str | None = None, self_: bool = False, description: str = "") -> dict:
    return {"protocol": protocol, "from_port": low, "to_port": high, "cidr": cidr,
            "source": source, "self": self_, "description": description}


def rules_from_permissions(group_id: str, permissions: list[dict[str, Any]]) -> list[dict]:
    """EC2's IpPermissions, one rule per source, in our shape."""
    rules = []
    for perm in permissions:
        protocol = str(perm.get("IpProtocol"))
        low = int(perm.get("FromPort", 0) if protocol != "-1" else 0)
        high = int(perm.get("ToPort", 0) if protocol != "-1" else 0)
        for ip_range in perm.get("IpRanges") or []:
            rules.append(_rule(protocol, low, high, cidr=ip_range["CidrIp"],
                               description=ip_range.get("Description", "")))
        for pair in perm.get("UserIdGroupPairs") or []:
            is_self = pair.get("GroupId") == group_id
            rules.append(_rule(protocol, low, high, source=None if is_self else pair["GroupId"],
                               self_=is_self, description=pair.get("Description", "")))
    return sorted(rules, key=rule_key)


def permission_of(group_id: str, rule: Mapping[str, Any]) -> dict[str, Any]:
    protocol = str(rule["protocol"])
    perm: dict[str, Any] = {"IpProtocol": protocol}
    if protocol != "-1":
        perm.update(FromPort=int(rule["from_port"]), ToPort=int(rule["to_port"]))
    description = {"Description": rule["description"]} if rule.get("description") else {}
    if rule.get("cidr"):
        perm["IpRanges"] = [{"CidrIp": rule["cidr"], **description}]
    else:
        source = group_id if rule.get("self") else rule.get("source")
        if not source:
            raise ProviderError(f"ingress rule {dict(rule)} needs cidr, source or self")
        perm["UserIdGroupPairs"] = [{"GroupId": source, **description}]
    return perm


class SecurityGroup(_Ec2Type):
    """``aws_security_group``: a VPC security group with its ingress rules (egress: EC2's
    default, everything). Attributes: region, vpc_id, name, description, ingress (list of
    {protocol, from_port, to_port, cidr, source, self, description})."""

    type_name = "aws_security_group"
    force_new = frozenset({"region", "vpc_id", "name", "description"})
    computed = frozenset({"id", "aws_name"})

    def list(self, scope: ListScope) -> list[LiveResource]:
        known = known_by_address(scope)
        found = []
        for region, group in self._describe(scope, "describe_security_groups", "SecurityGroups"):
            tags = tag_dict(group.get("Tags"))
            address = tags[TAG_ADDRESS]
            recorded = known.get(address)
            rules = rules_from_permissions(group["GroupId"], group.get("IpPermissions") or [])
            attributes = {
                "region": region, "vpc_id": group["VpcId"],
                "name": (recorded.attributes.get("name") if recorded else group["GroupName"]),
                "description": group.get("Description", ""),
                "ingress": in_known_order(rules, recorded.attributes.get("ingress")
                                          if recorded else None, rule_key),
                "id": group["GroupId"], "aws_name": group["GroupName"],
            }
            found.append(LiveResource(address, group["GroupId"], attributes, tags.get(TAG_TOKEN)))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        region = desired["region"]
        live = self._by_token(address, token, desired)
        if live is None:
            answer = self.call(region, "create_security_group", address=address,
                               GroupName=self.name_of(desired, 255),
                               Description=desired["description"], VpcId=desired["vpc_id"],
                               TagSpecifications=self._tag_specs("security-group", address,
                                                                 token))
            group_id = answer["GroupId"]
            live = LiveResource(address, group_id, {**desired, "ingress": [], "id": group_id,
                                                    "aws_name": self.name_of(desired, 255)},
                                token)
        return self.update(address, live, desired)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        region, group_id = desired["region"], prior.id
        have = {rule_key(rule): rule for rule in prior.attributes.get("ingress") or []}
        want = {rule_key(rule): rule for rule in desired.get("ingress") or []}
        gone = [permission_of(group_id, have[key]) for key in sorted(set(have) - set(want))]
        new = [permission_of(group_id, want[key]) for key in sorted(set(want) - set(have))]
        if gone:
            ignore_codes({"InvalidPermission.NotFound"}, lambda: self.call(
                region, "revoke_security_group_ingress", address=address, GroupId=group_id,
                IpPermissions=gone))
        if new:
            ignore_codes({"InvalidPermission.Duplicate"}, lambda: self.call(
                region, "authorize_security_group_ingress", address=address, GroupId=group_id,
                IpPermissions=new, eventual=GONE_SG))
        return LiveResource(address, group_id, {**desired, "id": group_id,
                                                "aws_name": prior.attributes.get("aws_name")},
                            prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        # Instances and load balancers release their interfaces some time after they are
        # deleted; until then the group is in use.
        self.delete_when_free(address, "the group's last users to go", lambda: self.call(
            prior.attributes["region"], "delete_security_group", address=address,
            GroupId=prior.id), gone=GONE_SG, busy=frozenset({"DependencyViolation"}),
            interval_s=5)


# -- the head's network interface -------------------------------------------------------------


class NetworkInterface(_Ec2Type):
    """``aws_network_interface``: an interface that outlives instances, so a replaced head keeps
    its private address. Attributes: region, subnet_id, private_ip (null: EC2 picks),
    security_group_ids, description; computed id and address."""

    type_name = "aws_network_interface"
    force_new = frozenset({"region", "subnet_id", "private_ip"})
    computed = frozenset({"id", "address"})

    def list(self, scope: ListScope) -> list[LiveResource]:
        known = known_by_address(scope)
        found = []
        for region, eni in self._describe(scope, "describe_network_interfaces",
                                          "NetworkInterfaces"):
            tags = tag_dict(eni.get("TagSet"))
            address = tags[TAG_ADDRESS]
            recorded = known.get(address)
            wanted_ip = recorded.attributes.get("private_ip") if recorded else None
            found.append(LiveResource(address, eni["NetworkInterfaceId"], {
                "region": region, "subnet_id": eni["SubnetId"],
                "private_ip": eni["PrivateIpAddress"] if wanted_ip else None,
                "security_group_ids": sorted(g["GroupId"] for g in eni.get("Groups") or []),
                "description": eni.get("Description", ""),
                "id": eni["NetworkInterfaceId"], "address": eni["PrivateIpAddress"],
            }, tags.get(TAG_TOKEN)))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        region = desired["region"]
        live = self._by_token(address, token, desired)
        if live is not None:
            return live
        params: dict[str, Any] = {
            "SubnetId": desired["subnet_id"], "Groups": sorted(desired["security_group_ids"]),
            "Description": desired.get("description") or "", "ClientToken": token,
            "TagSpecifications": self._tag_specs("network-interface", address, token)}
        if desired.get("private_ip"):
            params["PrivateIpAddress"] = desired["private_ip"]
        eni = self.call(region, "create_network_interface", address=address, eventual=GONE_SG,
                        **params)["NetworkInterface"]
        return LiveResource(address, eni["NetworkInterfaceId"], {
            **desired, "security_group_ids": sorted(desired["security_group_ids"]),
            "id": eni["NetworkInterfaceId"], "address": eni["PrivateIpAddress"]}, token)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        region = desired["region"]
        self.call(region, "modify_network_interface_attribute", address=address,
                  NetworkInterfaceId=prior.id, Groups=sorted(desired["security_group_ids"]))
        if desired.get("description") != prior.attributes.get("description"):
            self.call(region, "modify_network_interface_attribute", address=address,
                      NetworkInterfaceId=prior.id,
                      Description={"Value": desired.get("description") or ""})
        return LiveResource(address, prior.id, {
            **desired, "security_group_ids": sorted(desired["security_group_ids"]),
            "id": prior.id, "address": prior.attributes["address"]}, prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        # In use until its instance has terminated.
        self.delete_when_free(address, "the interface to be detached", lambda: self.call(
            prior.attributes["region"], "delete_network_interface", address=address,
            NetworkInterfaceId=prior.id), gone=GONE_ENI,
            busy=frozenset({"InvalidNetworkInterface.InUse"}))


# -- launch templates -------------------------------------------------------------------------

TEMPLATE_KEYS = ("image_id", "instance_type", "key_name", "security_group_ids", "bootstrap",
                 "iam_instance_profile")


def template_data(address: str, desired: Mapping[str, Any]) -> dict[str, Any]:
    user_data = render_bootstrap(address, desired["bootstrap"])
    data: dict[str, Any] = {
        "ImageId": desired["image_id"], "InstanceType": desired["instance_type"],
        "UserData": base64.b64encode(user_data.encode()).decode(),
        # IMDSv2 only: no instance metadata for a request that did not ask for a token first.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
    }
    if desired.get("key_name"):
        data["KeyName"] = desired["key_name"]
    if desired.get("security_group_ids"):
        data["SecurityGroupIds"] = sorted(desired["security_group_ids"])
    if desired.get("iam_instance_profile"):
        data["IamInstanceProfile"] = {"Name": desired["iam_instance_profile"]}
    return data


def attributes_of_template(address: str, data: Mapping[str, Any],
                           recorded: Mapping[str, Any]) -> dict[str, Any]:
    """Our attributes of a version's data. The bootstrap facts are the recorded ones when they
    render to the version's user-data, else a marker that differs from any desired value."""
    user_data = data.get("UserData")
    script = base64.b64decode(user_data).decode(errors="replace") if user_data else ""
    bootstrap = bootstrap_behind(address, script, recorded.get("bootstrap"))
    return {
        "image_id": data.get("ImageId"), "instance_type": data.get("InstanceType"),
        "key_name": data.get("KeyName"),
        "security_group_ids": sorted(data.get("SecurityGroupIds") or []),
        "bootstrap": bootstrap,
        "iam_instance_profile": (data.get("IamInstanceProfile") or {}).get("Name"),
    }


class LaunchTemplate(_Ec2Type):
    """``aws_launch_template``: what a node boots with (image, type, user-data). A change makes
    a new version and makes it the default; ``version`` (computed) is what instances and the
    Auto Scaling group use. Attributes: region, name, image_id, instance_type, key_name,
    security_group_ids, bootstrap (the facts its user-data is rendered from, see
    :mod:`provisioner.providers.bootstrap`), iam_instance_profile."""

    type_name = "aws_launch_template"
    force_new = frozenset({"region", "name"})
    computed = frozenset({"id", "version", "aws_name"})

    def list(self, scope: ListScope) -> list[LiveResource]:
        known = known_by_address(scope)
        found = []
        for region, template in self._describe(scope, "describe_launch_templates",
                                               "LaunchTemplates"):
            tags = tag_dict(template.get("Tags"))
            address = tags[TAG_ADDRESS]
            recorded = known.get(address)
            version = int(template["LatestVersionNumber"])
            if recorded and recorded.attributes.get("version") == version:
                # The version we made is still the latest: its data is what we recorded
                # (versions are immutable), so no second call is needed.
                data = {key: recorded.attributes.get(key) for key in TEMPLATE_KEYS}
            else:
                answer = self.call(region, "describe_launch_template_versions",
                                   LaunchTemplateId=template["LaunchTemplateId"],
                                   Versions=[str(version)])
                data = attributes_of_template(
                    address, answer["LaunchTemplateVersions"][0]["LaunchTemplateData"],
                    recorded.attributes if recorded else {})
            name = recorded.attributes.get("name") if recorded else template["LaunchTemplateName"]
            found.append(LiveResource(address, template["LaunchTemplateId"], {
                "region": region, "name": name, **data, "id": template["LaunchTemplateId"],
                "version": version, "aws_name": template["LaunchTemplateName"],
            }, tags.get(TAG_TOKEN)))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        region = desired["region"]
        live = self._by_token(address, token, desired)
        if live is not None:
            return live
        template = self.call(
            region, "create_launch_template", address=address, ClientToken=token,
            LaunchTemplateName=self.name_of(desired, 128),
            LaunchTemplateData=template_data(address, desired), eventual=GONE_SG,
            TagSpecifications=self._tag_specs("launch-template", address, token),
        )["LaunchTemplate"]
        return self._live(address, desired, template["LaunchTemplateId"],
                          int(template["LatestVersionNumber"]), template["LaunchTemplateName"],
                          token)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        region = desired["region"]
        version = self.call(region, "create_launch_template_version", address=address,
                            LaunchTemplateId=prior.id, ClientToken=_version_token(prior, desired),
                            LaunchTemplateData=template_data(address, desired),
                            )["LaunchTemplateVersion"]["VersionNumber"]
        self.call(region, "modify_launch_template", address=address, LaunchTemplateId=prior.id,
                  DefaultVersion=str(version))
        return self._live(address, desired, prior.id, int(version),
                          prior.attributes.get("aws_name"), prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        ignore_codes(GONE_LT, lambda: self.call(prior.attributes["region"],
                                                "delete_launch_template", address=address,
                                                LaunchTemplateId=prior.id))

    @staticmethod
    def _live(address: str, desired: dict[str, Any], template_id: str, version: int,
              name: str | None, token: str | None) -> LiveResource:
        attributes = {**desired, "security_group_ids": sorted(desired.get("security_group_ids")
                                                              or []),
                      "id": template_id, "version": version, "aws_name": name}
        return LiveResource(address, template_id, attributes, token)


def _version_token(prior: LiveResource, desired: Mapping[str, Any]) -> str:
    """The same new version asked for twice (a retried update) makes one version."""
    import hashlib
    import json

    body = json.dumps({key: desired.get(key) for key in TEMPLATE_KEYS}, sort_keys=True)
    return hashlib.sha256(f"{prior.id}:{prior.attributes.get('version')}:{body}".encode()
                          ).hexdigest()[:64]


# -- the head instance ------------------------------------------------------------------------


class Instance(_Ec2Type):
    """``aws_instance``: one instance from a launch template, on a network interface of its own
    (the head: its address is the interface's and outlives the instance). Attributes: region,
    role, launch_template_id, launch_template_version, network_interface_id, gcs_port,
    dashboard_port; computed id, private_ip, dashboard_url, gcs_address."""

    type_name = "aws_instance"
    force_new = frozenset({"region", "launch_template_id", "launch_template_version",
                           "network_interface_id"})
    computed = frozenset({"id", "private_ip", "dashboard_url", "gcs_address"})

    def list(self, scope: ListScope) -> list[LiveResource]:
        known = known_by_address(scope)
        found = []
        for region, instance in self._instances(scope):
            tags = tag_dict(instance.get("Tags"))
            address = tags[TAG_ADDRESS]
            recorded = known.get(address)
            desired = dict(recorded.attributes) if recorded else {}
            template = {t["Key"]: t["Value"] for t in instance.get("Tags") or []}
            enis = instance.get("NetworkInterfaces") or []
            primary = next((e for e in enis if e.get("Attachment", {}).get("DeviceIndex") == 0),
                           enis[0] if enis else {})
            attributes = {
                **desired, "region": region,
                "launch_template_id": template.get("aws:ec2launchtemplate:id",
                                                   desired.get("launch_template_id")),
                "launch_template_version": _int(template.get("aws:ec2launchtemplate:version"),
                                                desired.get("launch_template_version")),
                "network_interface_id": primary.get("NetworkInterfaceId"),
            }
            found.append(self._live(address, instance["InstanceId"], attributes,
                                    instance.get("PrivateIpAddress"), tags.get(TAG_TOKEN)))
        return found

    def _instances(self, scope: ListScope) -> list[tuple[str, dict]]:
        found = []
        for region in regions(scope):
            reservations = self.pages(region, "describe_instances", "Reservations",
                                      Filters=lineage_filter(self.ctx.owner) + [
                                          {"Name": "instance-state-name", "Values": LIVE_STATES}])
            for reservation in reservations:
                for instance in reservation.get("Instances") or []:
                    if self.owns(tag_dict(instance.get("Tags"))):
                        found.append((region, instance))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        region = desired["region"]
        live = self._by_token(address, token, desired)
        if live is None:
            instance = self.call(
                region, "run_instances", address=address, MinCount=1, MaxCount=1,
                ClientToken=token, eventual=GONE_ENI | {"InvalidLaunchTemplateId.NotFound"},
                LaunchTemplate={"LaunchTemplateId": desired["launch_template_id"],
                                "Version": str(desired["launch_template_version"])},
                NetworkInterfaces=[{"DeviceIndex": 0, "DeleteOnTermination": False,
                                    "NetworkInterfaceId": desired["network_interface_id"]}],
                TagSpecifications=self._tag_specs("instance", address, token),
            )["Instances"][0]
            live = self._live(address, instance["InstanceId"], dict(desired),
                              instance.get("PrivateIpAddress"), token)
        self.wait_for(address, f"instance {live.id} to run",
                      lambda: self._state(region, live.id) == "running" or None)
        return live

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        # Every attribute forces replacement except the ports, which only name what runs there.
        return self._live(address, prior.id, dict(desired), prior.attributes.get("private_ip"),
                          prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        region = prior.attributes["region"]
        if ignore_codes(GONE_INSTANCE, lambda: self.call(
                region, "terminate_instances", address=address,
                InstanceIds=[prior.id])) is None:
            return
        # The interface is free for the next head only once this one is gone.
        self.wait_for(address, f"instance {prior.id} to terminate",
                      lambda: self._state(region, prior.id) in (None, "terminated") or None,
                      interval_s=3)

    def is_head(self, attributes) -> bool:
        return attributes.get("role") == "head"

    def head_health(self, record: LiveResource) -> str | None:
        state = self._state(record.attributes["region"], record.id)
        if state != "running":
            return f"instance {record.id} is {state or 'gone'}"
        return dashboard_gcs_health(str(record.attributes.get("dashboard_url")))

    def _state(self, region: str, instance_id: str) -> str | None:
        answer = ignore_codes(GONE_INSTANCE, lambda: self.call(
            region, "describe_instances", InstanceIds=[instance_id]))
        for reservation in (answer or {}).get("Reservations") or []:
            for instance in reservation.get("Instances") or []:
                return str(instance["State"]["Name"])
        return None

    @staticmethod
    def _live(address: str, instance_id: str, attributes: dict[str, Any], private_ip: str | None,
              token: str | None) -> LiveResource:
        attributes.update(
            id=instance_id, private_ip=private_ip,
            gcs_address=f"{private_ip}:{attributes.get('gcs_port')}",
            dashboard_url=f"http://{private_ip}:{attributes.get('dashboard_port')}")
        return LiveResource(address, instance_id, attributes, token)


def _int(value: Any, default: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default

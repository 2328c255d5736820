"""Elastic Load Balancing v2 resource types: the load balancer (ALB or NLB), its target group
on every node's Serve proxy, the listener, and the head's registration in the target group. See
provisioner.providers.base for the contract.

ELBv2 cannot filter by tag, so ``list`` pages through ``Describe*`` once per region and reads
the tags of what it found in batches of 20 ARNs (the API's limit): the number of calls depends
on the load balancers in the account, never on the workers.
"""

from __future__ import annotations

from typing import Any

from provisioner.providers.aws.common import TAG_ADDRESS, TAG_TOKEN, AwsType, tag_list
from provisioner.providers.cloud import ignore_codes, known_by_address, regions
from provisioner.providers.base import KnownResource, ListScope, LiveResource

GONE_LB = frozenset({"LoadBalancerNotFound"})
GONE_TG = frozenset({"TargetGroupNotFound"})
GONE_LISTENER = frozenset({"ListenerNotFound"})
TAG_BATCH = 20


class _ElbType(AwsType):
    service = "elbv2"

    def _ours(self, region: str, items: list[dict[str, Any]], arn_key: str
              ) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """The items of ``items`` that are ours, with their tags."""
        by_arn = {item[arn_key]: item for item in items}
        found = []
        arns = sorted(by_arn)
        for start in range(0, len(arns), TAG_BATCH):
            answer = self.call(region, "describe_tags", ResourceArns=arns[start:start + TAG_BATCH])
            for description in answer.get("TagDescriptions") or []:
                tags = {t["Key"]: t.get("Value", "") for t in description.get("Tags") or []}
                if self.owns(tags):
                    found.append((by_arn[description["ResourceArn"]], tags))
        return found

    def _attributes(self, region: str, operation: str, **params: Any) -> dict[str, str]:
        answer = self.call(region, operation, **params)
        return {a["Key"]: a["Value"] for a in answer.get("Attributes") or []}



class LoadBalancer(_ElbType):
    """``aws_lb``: an internet-facing ALB (``type: application``) or NLB (``network``).
    Attributes: region, name, type, scheme, subnet_ids, security_group_ids (ALB),
    idle_timeout_s (ALB; keep it below Serve's keep-alive); computed id (ARN), dns_name,
    aws_name."""

    type_name = "aws_lb"
    force_new = frozenset({"region", "name", "type", "scheme"})
    computed = frozenset({"id", "dns_name", "aws_name"})

    def list(self, scope: ListScope) -> list[LiveResource]:
        known = known_by_address(scope)
        found = []
        for region in regions(scope):
            balancers = self.pages(region, "describe_load_balancers", "LoadBalancers")
            for lb, tags in self._ours(region, balancers, "LoadBalancerArn"):
                address = tags[TAG_ADDRESS]
                recorded = known.get(address)
                idle = None
                if lb["Type"] == "application":
                    idle = int(self._attributes(
                        region, "describe_load_balancer_attributes",
                        LoadBalancerArn=lb["LoadBalancerArn"]).get("idle_timeout.timeout_seconds",
                                                                   60))
                attributes = {
                    "region": region,
                    "name": recorded.attributes.get("name") if recorded else lb["LoadBalancerName"],
                    "type": lb["Type"], "scheme": lb["Scheme"],
                    "subnet_ids": sorted(z["SubnetId"] for z in lb.get("AvailabilityZones") or []),
                    "security_group_ids": sorted(lb.get("SecurityGroups") or []),
                    "idle_timeout_s": idle,
                }
                found.append(self._live(address, lb, attributes, tags.get(TAG_TOKEN)))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        region = desired["region"]
        live = self._by_token(address, token, desired)
        if live is not None:
            return self.update(address, live, desired)
        params: dict[str, Any] = {
            "Name": self.name_of(desired), "Subnets": sorted(desired["subnet_ids"]),
            "Scheme": desired.get("scheme") or "internet-facing", "Type": desired["type"],
            "IpAddressType": "ipv4", "Tags": tag_list(self.tags(address, token))}
        if desired.get("security_group_ids"):
            params["SecurityGroups"] = sorted(desired["security_group_ids"])
        lb = self.call(region, "create_load_balancer", address=address,
                       **params)["LoadBalancers"][0]
        self._set_idle_timeout(address, desired, lb["LoadBalancerArn"])
        return self._live(address, lb, dict(desired), token)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        region, arn = desired["region"], prior.id
        if sorted(desired["subnet_ids"]) != prior.attributes.get("subnet_ids"):
            self.call(region, "set_subnets", address=address, LoadBalancerArn=arn,
                      Subnets=sorted(desired["subnet_ids"]))
        groups = sorted(desired.get("security_group_ids") or [])
        if groups != prior.attributes.get("security_group_ids"):
            self.call(region, "set_security_groups", address=address, LoadBalancerArn=arn,
                      SecurityGroups=groups)
        if desired.get("idle_timeout_s") != prior.attributes.get("idle_timeout_s"):
            self._set_idle_timeout(address, desired, arn)
        lb = {"LoadBalancerArn": arn, "DNSName": prior.attributes.get("dns_name"),
              "LoadBalancerName": prior.attributes.get("aws_name")}
        return self._live(address, lb, dict(desired), prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        ignore_codes(GONE_LB, lambda: self.call(prior.attributes["region"],
                                                "delete_load_balancer", address=address,
                                                LoadBalancerArn=prior.id))

    def _set_idle_timeout(self, address: str, desired: dict[str, Any], arn: str) -> None:
        if desired["type"] == "application" and desired.get("idle_timeout_s"):
            self.call(desired["region"], "modify_load_balancer_attributes", address=address,
                      LoadBalancerArn=arn, Attributes=[{
                          "Key": "idle_timeout.timeout_seconds",
                          "Value": str(int(desired["idle_timeout_s"]))}])

    @staticmethod
    def _live(address: str, lb: dict[str, Any], attributes: dict[str, Any],
              token: str | None) -> LiveResource:
        attributes.update(subnet_ids=sorted(attributes.get("subnet_ids") or []),
                          security_group_ids=sorted(attributes.get("security_group_ids") or []),
                          id=lb["LoadBalancerArn"], dns_name=lb.get("DNSName"),
                          aws_name=lb.get("LoadBalancerName"))
        return LiveResource(address, lb["LoadBalancerArn"], attributes, token)


HEALTH_KEYS = {"path": "HealthCheckPath", "interval_s": "HealthCheckIntervalSeconds",
               "timeout_s": "HealthCheckTimeoutSeconds",
               "healthy_threshold": "HealthyThresholdCount",
               "unhealthy_threshold": "UnhealthyThresholdCount"}


class TargetGroup(_ElbType):
    """``aws_lb_target_group``: every node's Serve proxy. Attributes: region, name, protocol
    (HTTP for an ALB, TCP for an NLB), port, vpc_id, health_check {path, interval_s, timeout_s,
    healthy_threshold, unhealthy_threshold} (HTTP, expecting 200), deregistration_delay_s;
    computed id (ARN), aws_name."""

    type_name = "aws_lb_target_group"
    force_new = frozenset({"region", "name", "protocol", "port", "vpc_id"})
    computed = frozenset({"id", "aws_name"})

    def list(self, scope: ListScope) -> list[LiveResource]:
        known = known_by_address(scope)
        found = []
        for region in regions(scope):
            groups = self.pages(region, "describe_target_groups", "TargetGroups")
            for group, tags in self._ours(region, groups, "TargetGroupArn"):
                address = tags[TAG_ADDRESS]
                recorded = known.get(address)
                extra = self._attributes(region, "describe_target_group_attributes",
                                         TargetGroupArn=group["TargetGroupArn"])
                attributes = {
                    "region": region,
                    "name": recorded.attributes.get("name") if recorded else group["TargetGroupName"],
                    "protocol": group["Protocol"], "port": group["Port"],
                    "vpc_id": group["VpcId"],
                    "health_check": {key: group.get(field) for key, field in HEALTH_KEYS.items()},
                    "deregistration_delay_s": int(extra.get(
                        "deregistration_delay.timeout_seconds", 300)),
                }
                found.append(self._live(address, group["TargetGroupArn"],
                                        group["TargetGroupName"], attributes, tags.get(TAG_TOKEN)))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        live = self._by_token(address, token, desired)
        if live is not None:
            return self.update(address, live, desired)
        group = self.call(
            desired["region"], "create_target_group", address=address,
            Name=self.name_of(desired), Protocol=desired["protocol"], Port=int(desired["port"]),
            VpcId=desired["vpc_id"], TargetType="instance", HealthCheckProtocol="HTTP",
            HealthCheckEnabled=True, Matcher={"HttpCode": "200"}, **self._health(desired),
            Tags=tag_list(self.tags(address, token)))["TargetGroups"][0]
        self._set_delay(address, desired, group["TargetGroupArn"])
        return self._live(address, group["TargetGroupArn"], group["TargetGroupName"],
                          dict(desired), token)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        if desired.get("health_check") != prior.attributes.get("health_check"):
            self.call(desired["region"], "modify_target_group", address=address,
                      TargetGroupArn=prior.id, HealthCheckProtocol="HTTP",
                      Matcher={"HttpCode": "200"}, **self._health(desired))
        if desired.get("deregistration_delay_s") != prior.attributes.get("deregistration_delay_s"):
            self._set_delay(address, desired, prior.id)
        return self._live(address, prior.id, prior.attributes.get("aws_name"), dict(desired),
                          prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        # In use until its listener and Auto Scaling group have let go.
        self.delete_when_free(address, "the target group to be released", lambda: self.call(
            prior.attributes["region"], "delete_target_group", address=address,
            TargetGroupArn=prior.id), gone=GONE_TG, busy=frozenset({"ResourceInUse"}))

    def _set_delay(self, address: str, desired: dict[str, Any], arn: str) -> None:
        if desired.get("deregistration_delay_s") is not None:
            self.call(desired["region"], "modify_target_group_attributes", address=address,
                      TargetGroupArn=arn, Attributes=[{
                          "Key": "deregistration_delay.timeout_seconds",
                          "Value": str(int(desired["deregistration_delay_s"]))}])

    @staticmethod
    def _health(desired: dict[str, Any]) -> dict[str, Any]:
        check = desired.get("health_check") or {}
        return {field: check[key] for key, field in HEALTH_KEYS.items()
                if check.get(key) is not None}

    @staticmethod
    def _live(address: str, arn: str, name: str | None, attributes: dict[str, Any],
              token: str | None) -> LiveResource:
        attributes.update(id=arn, aws_name=name)
        return LiveResource(address, arn, attributes, token)


class Listener(_ElbType):
    """``aws_lb_listener``: the port clients connect to, forwarding to the target group.
    Attributes: region, load_balancer_arn, port, protocol (HTTP or TCP), target_group_arn;
    computed id (ARN)."""

    type_name = "aws_lb_listener"
    force_new = frozenset({"region", "load_balancer_arn"})
    computed = frozenset({"id"})

    def list(self, scope: ListScope) -> list[LiveResource]:
        found = []
        balancers: dict[str, set[str]] = {}
        for known in scope.known:
            arn = known.attributes.get("load_balancer_arn")
            if isinstance(arn, str) and arn.startswith("arn:") and known.attributes.get("region"):
                balancers.setdefault(str(known.attributes["region"]), set()).add(arn)
        for region, arns in sorted(balancers.items()):
            listeners: list[dict[str, Any]] = []
            for arn in sorted(arns):
                listeners += ignore_codes(GONE_LB, lambda: self.pages(
                    region, "describe_listeners", "Listeners", LoadBalancerArn=arn)) or []
            for listener, tags in self._ours(region, listeners, "ListenerArn"):
                forward = [a for a in listener.get("DefaultActions") or []
                           if a.get("Type") == "forward"]
                attributes = {"region": region, "load_balancer_arn": listener["LoadBalancerArn"],
                              "port": listener["Port"], "protocol": listener["Protocol"],
                              "target_group_arn": forward[0].get("TargetGroupArn")
                              if forward else None, "id": listener["ListenerArn"]}
                found.append(LiveResource(tags[TAG_ADDRESS], listener["ListenerArn"],
                                          attributes, tags.get(TAG_TOKEN)))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        live = self._by_token(address, token, desired)
        if live is not None:
            return self.update(address, live, desired)
        listener = self.call(
            desired["region"], "create_listener", address=address,
            LoadBalancerArn=desired["load_balancer_arn"], Port=int(desired["port"]),
            Protocol=desired["protocol"], DefaultActions=self._actions(desired),
            Tags=tag_list(self.tags(address, token)))["Listeners"][0]
        return LiveResource(address, listener["ListenerArn"],
                            {**desired, "id": listener["ListenerArn"]}, token)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        self.call(desired["region"], "modify_listener", address=address,
                  ListenerArn=prior.id, Port=int(desired["port"]), Protocol=desired["protocol"],
                  DefaultActions=self._actions(desired))
        return LiveResource(address, prior.id, {**desired, "id": prior.id}, prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        ignore_codes(GONE_LISTENER | GONE_LB, lambda: self.call(
            prior.attributes["region"], "delete_listener", address=address,
            ListenerArn=prior.id))

    @staticmethod
    def _actions(desired: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"Type": "forward", "TargetGroupArn": desired["target_group_arn"]}]


class TargetRegistration(_ElbType):
    """``aws_lb_target``: one instance registered in a target group (the head; the Auto Scaling
    group registers the workers itself). Targets carry no tags: ``list`` asks each known target
    group for its targets (one call per target group, not per target). Attributes: region,
    target_group_arn, instance_id, port; computed id (``<target group ARN>|<instance id>``)."""

    type_name = "aws_lb_target"
    force_new = frozenset({"region", "target_group_arn", "instance_id", "port"})
    computed = frozenset({"id"})

    def list(self, scope: ListScope) -> list[LiveResource]:
        wanted: dict[tuple[str, str], list[KnownResource]] = {}
        for known in scope.known:
            attributes = known.attributes
            group, instance = attributes.get("target_group_arn"), attributes.get("instance_id")
            if isinstance(group, str) and group.startswith("arn:") and isinstance(instance, str):
                wanted.setdefault((str(attributes["region"]), group), []).append(known)
        found = []
        for (region, group), targets in sorted(wanted.items()):
            answer = ignore_codes(GONE_TG, lambda: self.call(
                region, "describe_target_health", TargetGroupArn=group)) or {}
            registered = {(d["Target"]["Id"], int(d["Target"].get("Port") or 0))
                          for d in answer.get("TargetHealthDescriptions") or []
                          if (d.get("TargetHealth") or {}).get("State") != "draining"}
            for known in targets:
                target = (known.attributes["instance_id"], int(known.attributes.get("port") or 0))
                if target in registered:
                    found.append(self._live(known.address, dict(known.attributes), None))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        self.call(desired["region"], "register_targets", address=address,
                  TargetGroupArn=desired["target_group_arn"], Targets=self._targets(desired))
        return self._live(address, dict(desired), token)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        return self._live(address, dict(desired), prior.token)

    def delete(self, address: str, prior: LiveResource) -> None:
        attributes = prior.attributes
        ignore_codes(GONE_TG | {"InvalidTarget"}, lambda: self.call(
            attributes["region"], "deregister_targets", address=address,
            TargetGroupArn=attributes["target_group_arn"], Targets=self._targets(attributes)))

    @staticmethod
    def _targets(attributes: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"Id": attributes["instance_id"], "Port": int(attributes["port"])}]

    @staticmethod
    def _live(address: str, attributes: dict[str, Any], token: str | None) -> LiveResource:
        identity = f"{attributes['target_group_arn']}|{attributes['instance_id']}"
        attributes["id"] = identity
        return LiveResource(address, identity, attributes, token)

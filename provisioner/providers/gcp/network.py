"""GCP network resource types: firewall rules and the head's reserved internal address. See
provisioner.providers.base for the contract and :mod:`provisioner.providers.gcp.common` for
ownership and names."""

from __future__ import annotations

from typing import Any, Mapping

from provisioner.providers.base import LiveResource
from provisioner.providers.gcp.common import GceType, base


def network_link(project: str, network: str) -> str:
    return f"projects/{project}/global/networks/{network}"


def subnetwork_link(project: str, region: str, subnetwork: str) -> str:
    return f"projects/{project}/regions/{region}/subnetworks/{subnetwork}"


class Firewall(GceType):
    """``gcp_firewall``: one ingress rule. Attributes: project, name, network, source_ranges,
    source_tags, target_tags, allowed (list of {protocol, ports})."""

    type_name = "gcp_firewall"
    kind, message, field = "Firewalls", "Firewall", "firewall_resource"
    force_new = frozenset({"project", "name", "network"})

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "network": network_link(desired["project"], desired["network"]),
            "direction": "INGRESS",
            "allowed": [{"IPProtocol": rule["protocol"],
                         **({"ports": [str(p) for p in rule["ports"]]} if rule.get("ports")
                            else {})} for rule in desired["allowed"]],
        }
        for key, field in (("source_ranges", "sourceRanges"), ("source_tags", "sourceTags"),
                           ("target_tags", "targetTags")):
            if desired.get(key):
                body[field] = sorted(desired[key])
        return body

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "network": base(item.get("network")),
            "source_ranges": sorted(item.get("sourceRanges") or []),
            "source_tags": sorted(item.get("sourceTags") or []),
            "target_tags": sorted(item.get("targetTags") or []),
            "allowed": [{"protocol": rule["IPProtocol"], "ports": list(rule.get("ports") or [])}
                        for rule in item.get("allowed") or []],
        }

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        body = self.body(address, desired)
        # A patch leaves out what is empty; say so explicitly for the lists that became empty.
        for field in ("sourceRanges", "sourceTags", "targetTags"):
            body.setdefault(field, [])
        self.patch(address, prior, body)
        return self.refreshed(address, prior, desired)


class Address(GceType):
    """``gcp_address``: a reserved regional internal address (the head's: it outlives head
    instances, so a replaced head keeps its address). Attributes: project, region, name,
    subnetwork, address (null: Compute picks one, kept from then on); computed ip."""

    type_name = "gcp_address"
    kind, message, field = "Addresses", "Address", "address_resource"
    scope, labels = "region", True
    force_new = frozenset({"project", "region", "name", "subnetwork", "address"})
    computed = GceType.computed | {"ip"}

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        body = {"addressType": "INTERNAL", "purpose": "GCE_ENDPOINT",
                "subnetwork": subnetwork_link(desired["project"], desired["region"],
                                              desired["subnetwork"])}
        if desired.get("address"):
            body["address"] = desired["address"]
        return body

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        return {"subnetwork": base(item.get("subnetwork")),
                "address": item.get("address") if recorded.get("address") else None,
                "ip": item.get("address")}

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        return self.refreshed(address, prior, desired)  # every attribute forces replacement

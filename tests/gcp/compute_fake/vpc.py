"""Networks, subnetworks, firewall rules and reserved addresses (regional internal/external and
global external), with the defaults GCE fills in."""

from __future__ import annotations

from . import errors
from .common import check_labels, require, set_labels
from .errors import invalid
from .links import API, REGIONS, parse_ref
from .network import (add_subnetwork, address_users, check_cidr, claim_internal_ip,
                      complete_subnetwork, external_ip, subnetwork_of)


def build_network(world, res, params: dict) -> None:
    body = res.body
    body.setdefault("autoCreateSubnetworks", False)
    body.setdefault("mtu", 1460)
    body.setdefault("routingConfig", {"routingMode": "REGIONAL"})
    body.setdefault("networkFirewallPolicyEnforcementOrder", "AFTER_CLASSIC_FIREWALL")


def network_ready(world, res) -> None:
    if res.body.get("autoCreateSubnetworks"):
        for region, (_, cidr) in REGIONS.items():
            subnet = add_subnetwork(world, f"regions/{region}", res.ref.name, res.link, cidr)
            subnet.owner = res.path


def network_removed(world, res) -> None:
    for subnet in list(world.of_collection("subnetworks")):
        if subnet.owner == res.path:
            world.drop(subnet)


def render_network(world, res, body: dict) -> None:
    links = sorted(s.link for s in world.of_collection("subnetworks")
                   if s.state != "creating" and s.body.get("network") == res.link)
    if links:
        body["subnetworks"] = links


def build_subnetwork(world, res, params: dict) -> None:
    require(res.body, ("network", "ipCidrRange"))
    check_cidr(world, res.body)
    complete_subnetwork(res.body)


def build_firewall(world, res, params: dict) -> None:
    body = res.body
    body.setdefault("network", f"{API}projects/{world.project}/global/networks/default")
    if world.visible(parse_ref(body["network"], world.project).path) is None:
        raise invalid("resource.network", body["network"],
                      "The referenced network resource cannot be found.")
    if bool(body.get("allowed")) == bool(body.get("denied")):
        raise invalid("resource.allowed", "", "Exactly one of allowed or denied must be set.")
    for key in ("allowed", "denied"):
        for i, rule in enumerate(body.get(key) or []):
            require(rule, ("IPProtocol",), f"resource.{key}[{i}]")
    body.setdefault("direction", "INGRESS")
    body.setdefault("priority", 1000)
    if not 0 <= int(body["priority"]) <= 65535:
        raise invalid("resource.priority", body["priority"], "Must be between 0 and 65535.")
    if body["direction"] == "INGRESS" and not any(
            body.get(k) for k in ("sourceRanges", "sourceTags", "sourceServiceAccounts")):
        body["sourceRanges"] = ["0.0.0.0/0"]
    if body["direction"] == "EGRESS" and not body.get("destinationRanges"):
        body["destinationRanges"] = ["0.0.0.0/0"]
    body.setdefault("disabled", False)
    body.setdefault("logConfig", {"enable": False})


def build_address(world, res, params: dict) -> None:
    body = res.body
    body.setdefault("addressType", "EXTERNAL")
    if body["addressType"] not in ("INTERNAL", "EXTERNAL"):
        raise invalid("resource.addressType", body["addressType"], "Unknown address type.")
    regional = res.scope != "global"
    if body["addressType"] == "INTERNAL":
        if not regional:
            raise invalid("resource.purpose", body.get("purpose", ""), "Global internal "
                          "addresses need purpose VPC_PEERING or PRIVATE_SERVICE_CONNECT, "
                          "which compute_fake does not implement.")
        require(body, ("subnetwork",))
        subnet = subnetwork_of(world, body["subnetwork"])
        body["network"] = subnet.body["network"]
        body.setdefault("purpose", "GCE_ENDPOINT")
        body["address"] = claim_internal_ip(world, subnet, body.get("address"),
                                            "resource.address", claimant=res)
    else:
        if body.get("subnetwork"):
            raise invalid("resource.subnetwork", body["subnetwork"],
                          "A subnetwork can only be used with INTERNAL addresses.")
        if body.get("address"):
            raise invalid("resource.address", body["address"], "External addresses are "
                          "assigned by Google Cloud (bring-your-own-IP is not implemented).")
        body["address"] = external_ip(world, "regional" if regional else "global")
        body.setdefault("networkTier", "PREMIUM")
        if not regional:
            body.setdefault("ipVersion", "IPV4")
    set_labels(body, check_labels(body.get("labels")))


def render_address(world, res, body: dict) -> None:
    users = address_users(world, res)
    body["status"] = "IN_USE" if users else "RESERVED"
    if users:
        body["users"] = users


def check_address_delete(world, res) -> None:
    users = address_users(world, res, include_pending=True)
    if users:
        raise errors.in_use("address", res.path, parse_ref(users[0], world.project).path)

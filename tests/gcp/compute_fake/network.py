"""Networks, subnetworks and addresses: the default network, internal IP allocation from a
subnetwork's range, and which resources use a reserved address.

GCE keeps four addresses of every subnetwork range (network, gateway, second-to-last and
broadcast: cloud.google.com/vpc/docs/subnets#unusable-ip-addresses), never hands out a reserved
static address as an ephemeral one, and reports an address IN_USE with its ``users`` once a VM
or forwarding rule holds it. ``users`` and ``status`` are computed when read, so they never drift.
"""

from __future__ import annotations

import ipaddress

from . import errors
from .errors import invalid
from .links import REGIONS, fingerprint, parse_ref


def seed_default_network(world) -> None:
    """The auto-mode ``default`` network, its subnetworks and its four default firewall rules."""
    net = world.new_resource("global", "networks", "default",
                             {"autoCreateSubnetworks": True, "description":
                              "Default network for the project", "mtu": 1460,
                              "routingConfig": {"routingMode": "REGIONAL"},
                              "networkFirewallPolicyEnforcementOrder":
                              "AFTER_CLASSIC_FIREWALL"}, "compute#network")
    net.state = "ready"
    world.add(net)
    for region, (_, cidr) in REGIONS.items():
        add_subnetwork(world, f"regions/{region}", "default", net.link, cidr)
    rules = {
        "default-allow-internal": ({"IPProtocol": "tcp", "ports": ["0-65535"]},
                                   ["10.128.0.0/9"], 65534),
        "default-allow-ssh": ({"IPProtocol": "tcp", "ports": ["22"]}, ["0.0.0.0/0"], 65534),
        "default-allow-rdp": ({"IPProtocol": "tcp", "ports": ["3389"]}, ["0.0.0.0/0"], 65534),
        "default-allow-icmp": ({"IPProtocol": "icmp"}, ["0.0.0.0/0"], 65534),
    }
    for name, (allowed, ranges, priority) in rules.items():
        rule = world.new_resource("global", "firewalls", name, {
            "network": net.link, "allowed": [allowed], "sourceRanges": ranges,
            "priority": priority, "direction": "INGRESS", "disabled": False,
            "logConfig": {"enable": False}}, "compute#firewall")
        rule.state = "ready"
        world.add(rule)


def add_subnetwork(world, scope: str, name: str, network_link: str, cidr: str):
    body = {"network": network_link, "ipCidrRange": cidr}
    subnet = world.new_resource(scope, "subnetworks", name, body, "compute#subnetwork")
    complete_subnetwork(subnet.body)
    subnet.state = "ready"
    world.add(subnet)
    return subnet


def complete_subnetwork(body: dict) -> None:
    net = ipaddress.ip_network(body["ipCidrRange"])
    body.setdefault("gatewayAddress", str(net.network_address + 1))
    body.setdefault("privateIpGoogleAccess", False)
    body.setdefault("purpose", "PRIVATE")
    body.setdefault("stackType", "IPV4_ONLY")
    body["fingerprint"] = fingerprint({k: v for k, v in body.items() if k != "fingerprint"})


def check_cidr(world, body: dict, field: str = "resource.ipCidrRange") -> None:
    try:
        net = ipaddress.ip_network(body["ipCidrRange"])
    except ValueError:
        raise invalid(field, body["ipCidrRange"], "Invalid IPCidrRange.") from None
    for other in world.of_collection("subnetworks"):
        if other.body.get("network") == body.get("network") and net.overlaps(
                ipaddress.ip_network(other.body["ipCidrRange"])):
            raise invalid(field, body["ipCidrRange"],
                          f"Invalid IPCidrRange: {body['ipCidrRange']} conflicts with existing "
                          f"subnetwork '{other.ref.name}' in region '{other.scope[8:]}'.")


def default_subnetwork(world, region: str, network_link: str):
    for subnet in world.in_scope(f"regions/{region}", "subnetworks"):
        if subnet.body["network"] == network_link:
            return subnet
    return None


def subnetwork_of(world, link: str):
    ref = parse_ref(link, world.project)
    return world.resources.get(ref.path) if ref else None


def _internal_holders(world, subnet_link: str):
    """(ip, resource) for every internal address held in a subnetwork, in any state."""
    for res in world.resources.values():
        if res.collection == "instances":
            for nic in res.body.get("networkInterfaces", []):
                if nic.get("subnetwork") == subnet_link and nic.get("networkIP"):
                    yield nic["networkIP"], res
        elif res.collection == "addresses" and res.body.get("subnetwork") == subnet_link:
            yield res.body.get("address"), res
        elif (res.collection == "forwardingRules" and res.body.get("subnetwork") == subnet_link
              and res.body.get("IPAddress")):
            yield res.body["IPAddress"], res


def claim_internal_ip(world, subnet, wanted: str | None, field: str, *, claimant) -> str:
    """An internal IP for ``claimant`` in ``subnet``: ``wanted`` if it may take it (free, or a
    reserved address not used by anything else), else the lowest free one."""
    net = ipaddress.ip_network(subnet.body["ipCidrRange"])
    holders = list(_internal_holders(world, subnet.link))
    if wanted:
        try:
            ip = ipaddress.ip_address(wanted)
        except ValueError:
            raise invalid(field, wanted, "Invalid IP address.") from None
        if ip not in net or ip in _unusable(net):
            raise invalid(field, wanted, "Requested internal IP is outside the subnetwork "
                          "CIDR range or is reserved by Google Cloud.")
        for held, holder in holders:
            if held != wanted or holder is claimant:
                continue
            if holder.collection == "addresses" and not address_users(world, holder,
                                                                    include_pending=True):
                continue  # a reserved static address: the claimant takes it
            raise invalid(field, wanted, f"IP address '{wanted}' is already being used by "
                          f"another resource.")
        return wanted
    taken = {held for held, _ in holders}
    for ip in net.hosts():
        if ip not in _unusable(net) and str(ip) not in taken:
            return str(ip)
    raise errors.ApiError(400, "ipSpaceExhausted",
                          f"IP space of '{subnet.path}' is exhausted.")


def _unusable(net) -> set:
    return {net.network_address + 1, net.broadcast_address - 1, net.broadcast_address}


# External addresses come from documentation ranges (RFC 5737), never routed anywhere: a test
# that wrongly connects to one reaches no real host.
_EXTERNAL_RANGES = {"global": ipaddress.ip_network("203.0.113.0/24"),
                    "regional": ipaddress.ip_network("198.51.100.0/24")}


def external_ip(world, where: str) -> str:
    """An ephemeral or static external address: 203.0.113.x for global ones, 198.51.100.x for
    regional ones (forwarding rules, reserved addresses, VMs' access configs)."""
    world.external_ips[where] += 1
    n = world.external_ips[where]
    net = _EXTERNAL_RANGES[where]
    if n >= net.num_addresses - 1:
        raise errors.ApiError(403, "quotaExceeded", f"compute_fake has no more {where} external "
                              f"addresses in {net}.", status="PERMISSION_DENIED")
    return str(net.network_address + n)


def address_users(world, address, *, include_pending: bool = False) -> list[str]:
    """selfLinks of the VMs and forwarding rules using a reserved address."""
    states = ("creating", "ready", "deleting") if include_pending else ("ready", "deleting")
    ip = address.body.get("address")
    users = []
    for res in world.resources.values():
        if res is address or res.state not in states:
            continue
        if res.collection == "instances" and address.body.get("addressType") == "INTERNAL":
            if any(nic.get("networkIP") == ip
                   and nic.get("subnetwork") == address.body.get("subnetwork")
                   for nic in res.body.get("networkInterfaces", [])):
                users.append(res.link)
        elif res.collection == "forwardingRules" and res.body.get("IPAddress") == ip \
                and (res.scope == "global") == (address.scope == "global"):
            users.append(res.link)
    return sorted(users)

"""Network plumbing: one bridge on this machine, one network namespace per host, a veth pair
between them.

Layout for prefix ``prv`` and subnet ``10.237.0``::

    this machine   prvbr0 10.237.0.1/24 ──┬── prvv10 ══ eth0 10.237.0.10/24   (netns prv-h0)
                                          └── prvv11 ══ eth0 10.237.0.11/24   (netns prv-h1)

Every host has ``lo`` up and a default route via the bridge address, like a VM on a private
network. All names derive from the prefix, so the leftovers of a crashed run are found by name
alone (``list_netns``/``list_links``), with no record needed.

IPv4 forwarding is switched off on the bridge: a packet from a host to an address outside the
subnet is dropped by this machine instead of being routed out, so harness traffic stays between
this machine and its hosts whatever runs on them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess

from tests.harness.model import HarnessError

INNER_IF = "eth0"


def bridge_name(prefix: str) -> str:
    return f"{prefix}br0"


def netns_name(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


def veth_name(prefix: str, address: str) -> str:
    # Named by the address's last octet: unique per host and short enough for IFNAMSIZ (15).
    return f"{prefix}v{address.rsplit('.', 1)[1]}"


def gateway(subnet: str) -> str:
    return f"{subnet}.1"


def ip(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True)
    if check and done.returncode:
        raise HarnessError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def list_netns(prefix: str) -> list[str]:
    """Network namespaces of this prefix (``<prefix>-<host>``)."""
    lines = ip("netns", "list").stdout.splitlines()
    names = [line.split()[0] for line in lines if line.strip()]
    return [name for name in names if name.startswith(f"{prefix}-")]


def list_links(prefix: str) -> list[str]:
    """Links of this prefix on this machine: the bridge and the machine ends of the veths.
    Matched exactly (not by bare prefix), so prefix ``prv`` never touches ``prvtbr0``."""
    pattern = re.compile(rf"{re.escape(prefix)}(br0|v\d+)")
    links = json.loads(ip("-j", "link", "show").stdout or "[]")
    return [link["ifname"] for link in links if pattern.fullmatch(link["ifname"])]


def link_exists(name: str, netns: str | None = None) -> bool:
    where = ["-n", netns] if netns else []
    return ip(*where, "link", "show", "dev", name, check=False).returncode == 0


def _sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key}", "w") as handle:
        handle.write(value)


def _check_subnet_free(prefix: str, subnet: str) -> None:
    """Refuse a subnet that an interface of this machine already uses: routing would be ambiguous
    and harness traffic could leak onto a real network."""
    network = ipaddress.ip_network(f"{subnet}.0/24")
    for link in json.loads(ip("-j", "-4", "addr", "show").stdout or "[]"):
        if link["ifname"] == bridge_name(prefix):
            continue
        for addr in link.get("addr_info", []):
            if ipaddress.ip_address(addr["local"]) in network:
                raise HarnessError(f"subnet {network} is already used by {link['ifname']} "
                                   f"({addr['local']}); choose another subnet")


def ensure_bridge(prefix: str, subnet: str) -> None:
    """Create (or repair) the bridge with the gateway address. Idempotent."""
    bridge = bridge_name(prefix)
    _check_subnet_free(prefix, subnet)
    if not link_exists(bridge):
        ip("link", "add", bridge, "type", "bridge")
    ip("addr", "replace", f"{gateway(subnet)}/24", "dev", bridge)
    _sysctl(f"net/ipv4/conf/{bridge}/forwarding", "0")  # see the module docstring
    ip("link", "set", bridge, "up")


def ensure_host_network(prefix: str, subnet: str, host: str, address: str) -> None:
    """Create (or repair) the host's namespace, veth pair, address and routes. Idempotent: a
    killed host keeps its namespace, so restart only re-plugs the cable."""
    netns, veth = netns_name(prefix, host), veth_name(prefix, address)
    if netns not in list_netns(prefix):
        ip("netns", "add", netns)
    if not (link_exists(veth) and link_exists(INNER_IF, netns)):
        # Half a pair is useless: drop both ends and make a new pair.
        ip("link", "del", veth, check=False)
        ip("-n", netns, "link", "del", INNER_IF, check=False)
        ip("link", "add", veth, "type", "veth", "peer", "name", INNER_IF, "netns", netns)
    ip("link", "set", veth, "master", bridge_name(prefix), "up")
    # One `ip` process for all the inside work: fewer forks make `up` of many hosts faster.
    ip("-n", netns, "-batch", "-", stdin="\n".join([
        "link set lo up",
        f"addr replace {address}/24 dev {INNER_IF}",
        f"link set {INNER_IF} up",
        f"route replace default via {gateway(subnet)}",
    ]) + "\n")


def set_plugged(prefix: str, address: str, plugged: bool) -> None:
    """Plug or unplug the host's cable (the machine end of its veth). Unplugged, connections to
    the host time out instead of being refused, like a VM that lost power."""
    ip("link", "set", veth_name(prefix, address), "up" if plugged else "down")


def remove_host_network(prefix: str, host: str, address: str) -> None:
    ip("link", "del", veth_name(prefix, address), check=False)
    ip("netns", "del", netns_name(prefix, host), check=False)


def remove_all(prefix: str, keep_hosts: dict[str, str] | None = None) -> None:
    """Delete every namespace and link of the prefix except those of ``keep_hosts``
    (name -> address). Veths go before the bridge, namespaces after their veths."""
    keep_hosts = keep_hosts or {}
    keep_links = {veth_name(prefix, address) for address in keep_hosts.values()}
    if keep_hosts:
        keep_links.add(bridge_name(prefix))
    for link in sorted(list_links(prefix), key=lambda name: name == bridge_name(prefix)):
        if link not in keep_links:
            ip("link", "del", link, check=False)
    keep_ns = {netns_name(prefix, host) for host in keep_hosts}
    for netns in list_netns(prefix):
        if netns not in keep_ns:
            ip("netns", "del", netns, check=False)

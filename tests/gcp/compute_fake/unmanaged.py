"""Unmanaged zonal instance groups: insert (optional ``network``, ``subnetwork``,
``namedPorts``), members added and removed with ``addInstances`` / ``removeInstances``, and the
checks GCE makes on them. ``listInstances``, ``setNamedPorts`` and the in-use check on delete are
shared with a MIG's group (``groups``, ``handlers.delete``).

What GCE documents or is quoted answering, and the fake does:

- "An unmanaged instance group is a collection of virtual machines (VMs) that reside in a
  single zone, VPC network, and subnet" (compute/docs/instance-groups/creating-groups-of-
  unmanaged-instances); "You cannot create regional unmanaged instance groups" (InstanceGroup,
  compute_v1 types). The group's network and subnetwork are those given at insert, else those
  of the first member's nic0, and stay after the members leave.
- A member in another subnetwork: 400 ``wrongSubnetwork`` "Resource '<instance>' is expected to
  be in the subnetwork '<a>' but is in the subnetwork '<b>'." (kubernetes/ingress-gce#282).
- An instance added twice: 400 ``memberAlreadyExists`` "Resource '<instance>' is already a
  member of '<group>'." (ansible/ansible#72897, kubernetes/ingress-gce#2587), answered to the
  request itself, not through the operation.
- Removing an instance that no longer exists: 404 ``notFound`` for the instance
  (hashicorp/terraform-provider-google#56).
- A deleted VM leaves every group it was in. Membership is kept by instance id, so a VM created
  again under the same name is not a member.
- A group that a backend service uses cannot be deleted (400 resourceInUseByAnotherResource,
  the generic check in ``handlers.delete``).

Where the fake may be stricter than GCE (never looser) and its messages were not seen quoted: a
member in another network (400 ``wrongNetwork``, worded like ``wrongSubnetwork``); an instance
in another zone, an instance URL that is not a full or partial URL (a bare name), an instance
listed twice in one request, removing an instance that is not a member, an empty ``instances``
list, and addInstances/removeInstances on a MIG's group (all 400; GCE refuses the last, wording
unknown); named ports with a bad name or a port outside 1-65535.
"""

from __future__ import annotations

import re

from . import errors
from .errors import ApiError, invalid
from .links import fingerprint, parse_ref
from .network import subnetwork_of

_PORT_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")


def check_named_ports(ports: list, field: str) -> None:
    """Each named port has an RFC 1035 name and a port in 1-65535."""
    for i, port in enumerate(ports):
        here = f"{field}[{i}]"
        if not port.get("name"):
            raise errors.required(f"{here}.name")
        if "port" not in port:
            raise errors.required(f"{here}.port")
        if not _PORT_NAME.match(str(port["name"])):
            raise invalid(f"{here}.name", port["name"], "Must be a match of regex "
                          "'[a-z]([-a-z0-9]*[a-z0-9])?'")
        if not 1 <= int(port["port"]) <= 65535:
            raise invalid(f"{here}.port", port["port"], "Must be between 1 and 65535.")


def build_group(world, res, params: dict) -> None:
    """Insert of an unmanaged group; references are already resolved to full URLs."""
    if not res.scope.startswith("zones/"):
        # the API has no regionInstanceGroups.insert: regional groups come only from MIGs
        raise errors.unsupported("POST", f"{res.scope}/instanceGroups")
    body = res.body
    check_named_ports(body.get("namedPorts") or [], "resource.namedPorts")
    if body.get("subnetwork"):
        subnet = subnetwork_of(world, body["subnetwork"])
        body.setdefault("network", subnet.body["network"])
        if body["network"] != subnet.body["network"]:
            raise invalid("resource.subnetwork", body["subnetwork"],
                          "The subnetwork does not belong to the network.")
    body["fingerprint"] = fingerprint(body.get("namedPorts"))
    res.extra["members"] = {}      # instance path -> instance id, in the order added


def members(world, group) -> list:
    """The member VMs that still exist (a deleted VM has left the group)."""
    found = []
    table = group.extra.setdefault("members", {})
    for path, ident in list(table.items()):
        instance = world.visible(path)
        if instance is None or instance.body["id"] != ident:
            del table[path]
            continue
        found.append(instance)
    return found


def _managed(group) -> ApiError:
    return invalid("instanceGroup", group.ref.name,
                   f"The instance group '{group.path}' is managed by the instance group "
                   f"manager '{group.owner}'. To modify instances in this group, use the "
                   "Instance Group Manager API.")


def _path(link: str, project: str) -> str:
    ref = parse_ref(link, project)
    return ref.path if ref else link


def _instances(world, group, body: dict) -> list[tuple[str, object]]:
    """(field, instance) for every InstanceReference of an add/remove request body."""
    items = (body or {}).get("instances") or []
    if not items:
        raise errors.required("resource.instances")
    found, seen = [], set()
    for i, item in enumerate(items):
        field = f"resource.instances[{i}].instance"
        value = item.get("instance") if isinstance(item, dict) else None
        if not value:
            raise errors.required(field)
        ref = parse_ref(value, world.project)
        if ref is None or ref.collection != "instances":
            raise invalid(field, value, "The URL is malformed.")
        if ref.project == world.project and ref.scope != group.scope:
            raise invalid(field, value, f"The instance must be in the instance group's zone "
                          f"'{group.scope.split('/', 1)[1]}'.")
        instance = world.visible(ref.path)
        if instance is None:
            raise errors.not_found(ref.path)
        if instance.path in seen:
            raise invalid(field, value, "The instance is listed more than once.")
        seen.add(instance.path)
        found.append((field, instance))
    return found


def add_instances(world, group, body: dict):
    """Checks now; returns the effect to apply when the operation is DONE."""
    if group.owner:
        raise _managed(group)
    wanted = _instances(world, group, body)
    current = {m.path for m in members(world, group)}
    network, subnet = group.body.get("network"), group.body.get("subnetwork")
    p = world.project
    for _, instance in wanted:
        if instance.path in current:
            raise ApiError(400, "memberAlreadyExists", f"Resource '{instance.path}' is "
                           f"already a member of '{group.path}'.")
        nic = instance.body["networkInterfaces"][0]
        for what, have, want in (("network", nic.get("network"), network),
                                 ("subnetwork", nic.get("subnetwork"), subnet)):
            if want and have != want:
                raise ApiError(400, f"wrong{what[0].upper()}{what[1:]}",
                               f"Resource '{instance.path}' is expected to be in the {what} "
                               f"'{_path(want, p)}' but is in the {what} '{_path(have, p)}'.")
        network = network or nic.get("network")
        subnet = subnet or nic.get("subnetwork")

    def effect():
        table = group.extra.setdefault("members", {})
        for _, instance in wanted:
            table[instance.path] = instance.body["id"]
        for key, value in (("network", network), ("subnetwork", subnet)):
            if value:
                group.body.setdefault(key, value)
    return effect


def remove_instances(world, group, body: dict):
    """Checks now; returns the effect to apply when the operation is DONE."""
    if group.owner:
        raise _managed(group)
    wanted = _instances(world, group, body)
    current = {m.path for m in members(world, group)}
    for field, instance in wanted:
        if instance.path not in current:
            raise invalid(field, instance.link, f"Resource '{instance.path}' is not a member "
                          f"of '{group.path}'.")

    def effect():
        table = group.extra.setdefault("members", {})
        for _, instance in wanted:
            table.pop(instance.path, None)
    return effect


def check_backend_group(group, field: str) -> None:
    """A backend service takes only a group that has a network (terraform-provider-google#105,
    hashicorp/terraform#13493); an empty unmanaged group made without one has none."""
    if not group.body.get("network"):
        raise invalid(field, group.link, "The instance group has no network: give it one at "
                      "insert or add an instance to it first.")

"""Managed instance groups (zonal and regional) and the instance groups they make.

What GCE documents and the fake does: a MIG insert makes an instance group of the same name in
the same zone/region; "This operation is marked as DONE when the group is created even if the
instances in the group have not yet been created. You must separately verify the status of the
individual instances with the listManagedInstances method" (instanceGroupManagers.insert). So
after the operation is DONE, listManagedInstances shows the new VMs with ``currentAction:
CREATING`` and ``status.isStable`` is false; each later read of the group (get,
listManagedInstances, the group's listInstances) counts, and after
``mig_reads_before_stable`` reads the VMs exist (RUNNING, ``currentAction: NONE``). VMs are named
``<baseInstanceName>-<4 random [a-z0-9]>`` (or ``-001`` for a ``-###`` base), built from the
template with its labels. A queued instance failure (``fail_next_insert("instances", ...)``)
makes one creation fail: the VM stays CREATING with ``lastAttempt.errors`` and is retried, as
MIGs do. A managed VM deleted directly is recreated. Rolling updates to a new template are not
modelled (the template change applies to VMs created afterwards).
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass

from . import errors, refs, unmanaged
from .common import check_fingerprint, refresh_fingerprint, require
from .errors import invalid
from .instances import build_instance, instance_from_template, instance_ready
from .links import API, REGIONS, ZONES, fingerprint, parse_ref
from .listing import page

_BASE = re.compile(r"[a-z](?:[-a-z0-9]{0,57}|[-a-z0-9]{0,51}-#{1,10})\Z")
ACTIONS = ("abandoning", "creating", "creatingWithoutRetries", "deleting", "none", "recreating",
           "refreshing", "restarting", "resuming", "starting", "stopping", "suspending",
           "verifying")


@dataclass
class Managed:
    name: str
    zone: str
    action: str              # CREATING | NONE | DELETING
    seq: int
    reads: int = 0
    errors: list | None = None


# -- insert ---------------------------------------------------------------------------------------

def build_mig(world, res, params: dict) -> None:
    body = res.body
    require(body, ("baseInstanceName",))
    if "targetSize" not in body:
        raise errors.required("resource.targetSize")
    if not _BASE.match(body["baseInstanceName"]):
        raise invalid("resource.baseInstanceName", body["baseInstanceName"],
                      "Must be a match of regex '[a-z](([-a-z0-9]{0,57})|([-a-z0-9]{0,51}-#{1,10}"
                      "(\\[[0-9]{1,10}\\])?))'")
    if int(body["targetSize"]) < 0:
        raise invalid("resource.targetSize", body["targetSize"], "Must be non-negative.")
    unmanaged.check_named_ports(body.get("namedPorts") or [], "resource.namedPorts")
    versions = body.get("versions") or []
    if not body.get("instanceTemplate") and not versions:
        raise errors.required("resource.instanceTemplate")
    body.setdefault("instanceTemplate", versions[0]["instanceTemplate"] if versions else None)
    if not versions:
        body["versions"] = [{"instanceTemplate": body["instanceTemplate"]}]
    if res.scope.startswith("regions/"):
        region = res.scope.split("/", 1)[1]
        policy = body.setdefault("distributionPolicy", {})
        zones = policy.get("zones") or [{"zone": f"zones/{region}-{s}"}
                                        for s in REGIONS[region][0][:3]]
        for i, entry in enumerate(zones):
            zone = str(entry.get("zone", "")).rsplit("/", 1)[-1]
            if ZONES.get(zone) != region:
                raise invalid(f"resource.distributionPolicy.zones[{i}].zone",
                              entry.get("zone"), "Zone must be in the group's region.")
            entry["zone"] = f"{API}projects/{world.project}/zones/{zone}"
        policy["zones"] = zones
        policy.setdefault("targetShape", "EVEN")
    body.setdefault("listManagedInstancesResults", "PAGELESS")
    body["instanceGroup"] = f"{API}{world.path(res.scope, 'instanceGroups', res.ref.name)}"
    refresh_fingerprint(body)
    template = world.visible(parse_ref(body["instanceTemplate"], world.project).path)
    group_body = {"description": f"This instance group is controlled by Instance Group "
                                 f"Manager '{res.ref.name}'. To modify instances in this group, "
                                 f"use the Instance Group Manager API: https://cloud.google.com/"
                                 f"compute/docs/reference/latest/instanceGroupManagers",
                  "fingerprint": fingerprint(body.get("namedPorts"))}
    if body.get("namedPorts"):
        group_body["namedPorts"] = body["namedPorts"]
    nics = template.body["properties"].get("networkInterfaces") or []
    if nics and nics[0].get("network"):
        group_body["network"] = nics[0]["network"]
    group = world.new_resource(res.scope, "instanceGroups", res.ref.name, group_body,
                               "compute#instanceGroup")
    group.owner = res.path
    world.add(group)
    res.extra.update(group=group, managed={}, seq=0)


def mig_ready(world, res) -> None:
    res.extra["group"].state = "ready"
    reconcile(world, res)


def mig_undo(world, res) -> None:
    world.drop(res.extra["group"])


# -- the VMs of a MIG -----------------------------------------------------------------------------

def _zones(res) -> list[str]:
    if res.scope.startswith("zones/"):
        return [res.scope.split("/", 1)[1]]
    return [entry["zone"].rsplit("/", 1)[1] for entry in res.body["distributionPolicy"]["zones"]]


def _new_name(world, res, zone: str) -> str:
    base = res.body["baseInstanceName"]
    taken = set(res.extra["managed"]) | {r.ref.name for r in world.of_collection("instances")}
    hashes = re.search(r"-(#+)$", base)
    if hashes:
        width = len(hashes.group(1))
        stem = base[:hashes.start()]
        n = 1
        while f"{stem}-{n:0{width}d}" in taken:
            n += 1
        return f"{stem}-{n:0{width}d}"
    while True:
        name = f"{base}-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=4))
        if name not in taken:
            return name


def reconcile(world, res) -> None:
    """Plan CREATING/DELETING so the group heads for ``targetSize``."""
    managed: dict[str, Managed] = res.extra["managed"]
    live = [m for m in managed.values() if m.action != "DELETING"]
    want = int(res.body.get("targetSize", 0))
    zones = _zones(res)
    while len(live) < want:
        zone = min(zones, key=lambda z: sum(m.zone == z for m in live))
        res.extra["seq"] += 1
        entry = Managed(_new_name(world, res, zone), zone, "CREATING", res.extra["seq"])
        managed[entry.name] = entry
        live.append(entry)
    surplus = len(live) - want
    if surplus > 0:
        # not-yet-created VMs go first, then the newest
        for entry in sorted(live, key=lambda m: (m.action != "CREATING", -m.seq))[:surplus]:
            if entry.action == "CREATING" and _instance(world, entry) is None:
                del managed[entry.name]
            else:
                entry.action, entry.reads = "DELETING", 0
    if world.config.mig_reads_before_stable <= 0:
        advance(world, res, force=True)


def _instance(world, entry: Managed):
    return world.resources.get(world.path(f"zones/{entry.zone}", "instances", entry.name))


def notice_lost(world, res) -> None:
    """A managed VM deleted behind the MIG's back is to be created again (same name)."""
    for entry in res.extra.get("managed", {}).values():
        if entry.action == "NONE" and _instance(world, entry) is None:
            entry.action, entry.reads = "CREATING", 0


def advance(world, res, *, force: bool = False) -> None:
    """One read of the group: pending VM actions move on once they have waited long enough."""
    if res.state != "ready":
        return
    managed: dict[str, Managed] = res.extra["managed"]
    notice_lost(world, res)
    for entry in list(managed.values()):
        if entry.action == "NONE":
            continue
        entry.reads += 1
        if not force and entry.reads < world.config.mig_reads_before_stable:
            continue
        if entry.action == "CREATING":
            _create(world, res, entry)
        else:
            instance = _instance(world, entry)
            if instance is not None:
                world.drop(instance)
            del managed[entry.name]


def _create(world, res, entry: Managed) -> None:
    failure = world.take_failure("instances")
    if failure is None:
        template = world.visible(parse_ref(res.body["instanceTemplate"], world.project).path)
        body = instance_from_template(world, template, entry.zone, entry.name, res)
        instance = world.new_resource(f"zones/{entry.zone}", "instances", entry.name, body,
                                      "compute#instance")
        instance.owner = res.path
        try:
            refs.resolve(world, "instances", instance.scope, body)
            build_instance(world, instance, {})
        except errors.ApiError as error:
            failure = (errors.OPERATION_CODES.get(error.reason, error.reason.upper()),
                       error.message)
    if failure is not None:
        code, message = failure
        entry.errors, entry.reads = [{"code": code, "message": message}], 0
        return
    instance.state = "ready"
    instance_ready(instance)
    world.add(instance)
    entry.action, entry.errors = "NONE", None


def settle(world) -> None:
    """Carry out every pending VM action of every MIG now."""
    for res in list(world.of_collection("instanceGroupManagers")):
        advance(world, res, force=True)


# -- reads ----------------------------------------------------------------------------------------

def render_mig(world, res, body: dict) -> None:
    notice_lost(world, res)
    managed = res.extra["managed"].values()
    counts = {action: 0 for action in ACTIONS}
    for entry in managed:
        counts[entry.action.lower()] += 1
    body["currentActions"] = counts
    stable = all(m.action == "NONE" for m in managed) and \
        len(managed) == int(body.get("targetSize", 0))
    body["status"] = {"isStable": stable, "versionTarget": {"isReached": stable},
                      "stateful": {"hasStatefulConfig": False,
                                   "perInstanceConfigs": {"allEffective": True}}}


def members(world, group) -> list:
    """The existing VMs of an instance group (a MIG's group: its created VMs)."""
    if not group.owner:
        return unmanaged.members(world, group)
    mig = world.resources.get(group.owner)
    if mig is None:
        return []
    found = []
    for entry in mig.extra["managed"].values():
        instance = _instance(world, entry)
        if instance is not None and instance.state != "creating":
            found.append(instance)
    return found


def render_group(world, res, body: dict) -> None:
    body["size"] = len(members(world, res))


def list_managed(world, res, params: dict) -> dict:
    notice_lost(world, res)
    items = []
    for entry in res.extra["managed"].values():
        item = {"instance": f"{API}{world.path(f'zones/{entry.zone}', 'instances', entry.name)}",
                "name": entry.name, "currentAction": entry.action,
                "version": {"instanceTemplate": res.body["instanceTemplate"]}}
        instance = _instance(world, entry)
        if instance is not None and instance.state != "creating":
            item.update(id=instance.body["id"], instanceStatus=instance.body["status"])
        if entry.errors:
            item["lastAttempt"] = {"errors": {"errors": entry.errors}}
        items.append(item)
    out: dict = {}
    if res.body.get("listManagedInstancesResults") == "PAGINATED":
        items, token = page(items, params, sort_key="instance")
        if token:
            out["nextPageToken"] = token
    else:  # PAGELESS (the default): maxResults and pageToken are ignored
        items, _ = page(items, {"filter": params.get("filter")}, sort_key="instance")
    if items:
        out["managedInstances"] = items
    advance(world, res)
    return out


def list_group_instances(world, res, params: dict, body: dict) -> dict:
    state = (body or {}).get("instanceState", "ALL")
    if state not in ("ALL", "RUNNING"):
        raise invalid("instanceState", state, "Must be ALL or RUNNING.")
    items = []
    for instance in members(world, res):
        if state == "RUNNING" and instance.body["status"] != "RUNNING":
            continue
        item = {"instance": instance.link, "status": instance.body["status"]}
        if res.body.get("namedPorts"):
            item["namedPorts"] = res.body["namedPorts"]
        items.append(item)
    items, token = page(items, params, sort_key="instance")
    regional = res.scope.startswith("regions/")
    out = {"kind": "compute#regionInstanceGroupsListInstances" if regional
           else "compute#instanceGroupsListInstances", "id": res.path,
           "selfLink": f"{res.link}/listInstances"}
    if items:
        out["items"] = items
    if token:
        out["nextPageToken"] = token
    if res.owner and res.owner in world.resources:
        advance(world, world.resources[res.owner])
    return out


# -- changes --------------------------------------------------------------------------------------

def set_named_ports(world, res, body: dict) -> callable:
    """Checks now; returns the effect to apply when the operation is DONE."""
    if body.get("fingerprint") is not None:
        check_fingerprint(body["fingerprint"], res.body.get("fingerprint"))
    ports = body.get("namedPorts") or []
    unmanaged.check_named_ports(ports, "namedPorts")

    def effect():
        for target in filter(None, [res, world.resources.get(res.owner or "")]):
            if ports:
                target.body["namedPorts"] = ports
            else:
                target.body.pop("namedPorts", None)
        res.body["fingerprint"] = fingerprint(ports or None)
        mig = world.resources.get(res.owner or "")
        if mig is not None:
            refresh_fingerprint(mig.body)
    return effect


def resize(world, res, params: dict) -> callable:
    raw = params.get("size")
    if raw is None:
        raise errors.required("size")
    try:
        size = int(raw)
    except ValueError:
        raise invalid("size", raw, "Must be an integer.") from None
    if size < 0:
        raise invalid("size", raw, "Must be greater than or equal to 0.")

    def effect():
        res.body["targetSize"] = size
        reconcile(world, res)
    return effect


def check_mig_delete(world, res) -> None:
    group = res.extra["group"]
    users = [r for r in world.referrers(group.path) if r is not res]
    if users:
        raise errors.in_use("instance_group", group.path, users[0].path)


def mig_removed(world, res) -> None:
    for entry in list(res.extra["managed"].values()):
        instance = _instance(world, entry)
        if instance is not None:
            world.drop(instance)
    world.drop(res.extra["group"])


def rebuild_mig(world, res, patch: dict) -> None:
    body = res.body
    if "versions" in patch:
        body["instanceTemplate"] = body["versions"][0]["instanceTemplate"]
    elif "instanceTemplate" in patch:
        body["versions"] = [{"instanceTemplate": body["instanceTemplate"]}]
    if int(body.get("targetSize", 0)) < 0:
        raise invalid("resource.targetSize", body["targetSize"], "Must be non-negative.")
    for key in ("baseInstanceName", "instanceGroup", "distributionPolicy"):
        if key in patch and patch[key] != res.extra["before"].get(key):
            raise invalid(f"resource.{key}", patch[key], "This field cannot be changed.")
    refresh_fingerprint(body)


def mig_patched(world, res) -> None:
    group = res.extra["group"]
    if res.body.get("namedPorts"):
        group.body["namedPorts"] = res.body["namedPorts"]
    else:
        group.body.pop("namedPorts", None)
    group.body["fingerprint"] = fingerprint(res.body.get("namedPorts"))
    reconcile(world, res)

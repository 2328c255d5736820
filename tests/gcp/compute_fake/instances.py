"""VM instances and instance templates: machine types, boot disks and network interfaces the
way an instance insert (or a MIG, from its template) fills them in."""

from __future__ import annotations

import copy
import re

from . import errors
from .common import check_labels, require, set_labels
from .errors import invalid
from .links import API, ZONES, fingerprint, now, parse_ref
from .network import (claim_internal_ip, default_subnetwork, external_ip, subnetwork_of)

_MACHINE = re.compile(
    r"(?:(?:e2|n1|n2|n2d|n4|c2|c2d|c3|c3d|t2d|t2a|a2|g2|m1|m2|m3)-"
    r"(?:standard|highmem|highcpu|megamem|ultramem|highgpu)-\d+"
    r"|e2-(?:micro|small|medium)|f1-micro|g1-small"
    r"|(?:(?:e2|n1|n2|n2d)-)?custom-\d+-\d+(?:-ext)?)\Z")
_METADATA_KEY = re.compile(r"[a-zA-Z0-9_-]{1,127}\Z")


def machine_type_link(world, zone: str, value: str, field: str) -> str:
    """Instances take ``zones/<zone>/machineTypes/<type>`` (full or partial URL)."""
    ref = parse_ref(value, world.project)
    if ref is None or ref.collection != "machineTypes" or ref.scope != f"zones/{zone}":
        raise invalid(field, value, "Invalid value for machine type: it must be a URL of the "
                      f"form zones/{zone}/machineTypes/<type>.")
    if not _MACHINE.match(ref.name):
        raise invalid(field, value, f"Machine type with name '{ref.name}' does not exist in "
                      f"zone '{zone}'.")
    return ref.link


def check_template_machine_type(value: str) -> None:
    """Templates take a bare machine type name, e.g. ``e2-small``."""
    if not _MACHINE.match(value or ""):
        raise invalid("resource.properties.machineType", value,
                      f"Machine type with name '{value}' does not exist.")


def complete_nics(world, nics: list, prefix: str, *, zone: str | None, claimant) -> None:
    """Default network, subnetwork of the zone's region, internal IP (instances only)."""
    default_net = f"{API}projects/{world.project}/global/networks/default"
    for i, nic in enumerate(nics):
        field = f"{prefix}.networkInterfaces[{i}]"
        if not nic.get("network") and not nic.get("subnetwork"):
            if world.visible(parse_ref(default_net, world.project).path) is None:
                raise errors.required(f"{field}.network")
            nic["network"] = default_net
        if nic.get("subnetwork"):
            subnet = subnetwork_of(world, nic["subnetwork"])
            nic.setdefault("network", subnet.body["network"])
            if nic["network"] != subnet.body["network"]:
                raise invalid(f"{field}.subnetwork", nic["subnetwork"],
                              "The subnetwork does not belong to the network.")
        elif zone is not None:
            subnet = default_subnetwork(world, ZONES[zone], nic["network"])
            if subnet is None:
                raise invalid(f"{field}.subnetwork", "", "Subnetwork should be specified for "
                              "custom subnetmode network")
            nic["subnetwork"] = subnet.link
        else:
            subnet = None
        if zone is not None and subnet.scope != f"regions/{ZONES[zone]}":
            raise invalid(f"{field}.subnetwork", nic["subnetwork"],
                          "The subnetwork must be in the instance's region.")
        nic["kind"] = "compute#networkInterface"
        if claimant is None:
            continue
        nic["networkIP"] = claim_internal_ip(world, subnet, nic.get("networkIP"),
                                             f"{field}.networkIP", claimant=claimant)
        nic.setdefault("name", f"nic{i}")
        nic.setdefault("stackType", "IPV4_ONLY")
        for config in nic.get("accessConfigs", []):
            config.setdefault("type", "ONE_TO_ONE_NAT")
            config.setdefault("name", "External NAT")
            config.setdefault("networkTier", "PREMIUM")
            config.setdefault("natIP", external_ip(world, "regional"))
            config["kind"] = "compute#accessConfig"
        nic["fingerprint"] = fingerprint(nic)


def complete_disks(project: str, zone: str, name: str, disks: list) -> None:
    for i, disk in enumerate(disks):
        params = disk.pop("initializeParams", None) or {}
        if not disk.get("source") and not params:
            raise errors.required(f"resource.disks[{i}].initializeParams")
        disk_name = params.get("diskName") or (name if i == 0 else f"{name}-{i}")
        disk.setdefault("source", f"{API}projects/{project}/zones/{zone}/disks/{disk_name}")
        disk.setdefault("deviceName", f"persistent-disk-{i}")
        disk.setdefault("type", "PERSISTENT")
        disk.setdefault("mode", "READ_WRITE")
        disk.setdefault("interface", "SCSI")
        disk.setdefault("autoDelete", False)
        disk.setdefault("boot", False)
        disk["diskSizeGb"] = str(params.get("diskSizeGb", disk.get("diskSizeGb", "10")))
        disk.update(kind="compute#attachedDisk", index=i)


def build_instance(world, res, params: dict) -> None:
    body, zone = res.body, res.scope.split("/", 1)[1]
    require(body, ("machineType", "disks", "networkInterfaces"))
    body["machineType"] = machine_type_link(world, zone, body["machineType"],
                                            "resource.machineType")
    complete_disks(world.project, zone, res.ref.name, body["disks"])
    complete_nics(world, body["networkInterfaces"], "resource", zone=zone, claimant=res)
    set_labels(body, check_labels(body.get("labels")))
    check_metadata(body.get("metadata"), "resource.metadata")
    _instance_defaults(body)


def check_metadata(metadata: dict | None, field: str) -> None:
    """Keys "must conform to the following regexp: [a-zA-Z0-9-_]+, and be less than 128 bytes";
    a value at most 256 KiB; all keys and values "less than 512 KB" (compute_v1 ``Items``,
    ``Metadata``). A key given twice is refused too (the fake may be stricter than GCE here)."""
    seen, total = set(), 0
    for i, item in enumerate((metadata or {}).get("items") or []):
        key, value = item.get("key") or "", item.get("value") or ""
        if not _METADATA_KEY.match(key):
            raise invalid(f"{field}.items[{i}].key", key,
                          "Must be a match of regex '[a-zA-Z0-9-_]{1,127}'")
        if key in seen:
            raise invalid(f"{field}.items[{i}].key", key, "Duplicate metadata key.")
        seen.add(key)
        size = len(value.encode())
        if size > 262144:
            raise invalid(f"{field}.items[{i}].value", "",
                          "The value must be at most 262144 bytes (256 KiB).")
        total += len(key) + size
    if total >= 512 * 1024:
        raise invalid(field, "", "The total size of all keys and values must be less than "
                      "512 KB.")


def _instance_defaults(body: dict) -> None:
    body["status"] = "PROVISIONING"
    scheduling = body.setdefault("scheduling", {})
    scheduling.setdefault("onHostMaintenance", "MIGRATE")
    scheduling.setdefault("automaticRestart", True)
    scheduling.setdefault("preemptible", False)
    scheduling.setdefault("provisioningModel", "STANDARD")
    for flag in ("canIpForward", "deletionProtection", "startRestricted"):
        body.setdefault(flag, False)
    metadata = body.setdefault("metadata", {})
    metadata.update(kind="compute#metadata", fingerprint=fingerprint(metadata.get("items")))
    tags = body.setdefault("tags", {})
    tags["fingerprint"] = fingerprint(tags.get("items"))
    body["fingerprint"] = fingerprint(body)


def instance_ready(res) -> None:
    res.body.update(status="RUNNING", lastStartTimestamp=now(), cpuPlatform="Intel Broadwell")


def build_template(world, res, params: dict) -> None:
    body = res.body
    require(body, ("properties", "properties.machineType", "properties.disks",
                   "properties.networkInterfaces"))
    props = body["properties"]
    check_template_machine_type(props["machineType"])
    check_labels(props.get("labels"), "resource.properties.labels")
    check_metadata(props.get("metadata"), "resource.properties.metadata")
    if props.get("metadata"):
        props["metadata"].update(kind="compute#metadata",
                                 fingerprint=fingerprint(props["metadata"].get("items")))
    complete_nics(world, props["networkInterfaces"], "resource.properties", zone=None,
                  claimant=None)
    for i, disk in enumerate(props["disks"]):
        disk.setdefault("type", "PERSISTENT")
        disk.setdefault("mode", "READ_WRITE")
        disk.setdefault("boot", i == 0)
        disk["kind"] = "compute#attachedDisk"


def instance_from_template(world, template, zone: str, name: str, mig) -> dict:
    """The body a MIG inserts for one VM: the template's properties, the template's labels, and
    the ``instance-template`` / ``created-by`` metadata GCE adds to managed VMs."""
    props = copy.deepcopy(template.body["properties"])
    body = {key: value for key, value in props.items()
            if key in ("description", "disks", "networkInterfaces", "labels", "metadata",
                       "tags", "serviceAccounts", "scheduling", "canIpForward",
                       "guestAccelerators", "minCpuPlatform", "shieldedInstanceConfig")}
    body["machineType"] = f"zones/{zone}/machineTypes/{props['machineType']}"
    items = body.setdefault("metadata", {}).setdefault("items", [])
    items += [{"key": "instance-template", "value": template.path},
              {"key": "created-by", "value": mig.path}]
    return body

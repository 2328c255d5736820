"""GCP compute resource types: instance templates, the head instance, the head's unmanaged
instance group and the workers' managed instance group (zonal or regional). See
provisioner.providers.base for the contract and :mod:`provisioner.providers.gcp.common` for
ownership and names.

The workers' group has no autohealing: a Serve node without replicas answers 503 on
``/-/healthz`` by design, and a health check that drove autohealing would recreate it. The load
balancer's health check only routes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from provisioner.providers.base import LiveResource
from provisioner.providers.bootstrap import bootstrap_behind, render_bootstrap
from provisioner.providers.cloud import dashboard_gcs_health, ignore_codes, lineage_name
from provisioner.providers.gcp.api import to_dict
from provisioner.providers.gcp.common import GONE, GceType, base, owner_labels, short_link
from provisioner.providers.gcp.network import network_link, subnetwork_link

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
STARTUP_SCRIPT = "startup-script"


def machine_properties(address: str, desired: Mapping[str, Any], zone: str | None) -> dict:
    """An instance's (or template's) machine, disk, network, tags and startup-script."""
    project, region = desired["project"], desired["region"]
    machine = desired["machine_type"]
    interface: dict[str, Any] = {
        "network": network_link(project, desired["network"]),
        "subnetwork": subnetwork_link(project, region, desired["subnetwork"])}
    if desired.get("network_ip"):
        interface["networkIP"] = desired["network_ip"]
    if desired.get("public_ip"):
        interface["accessConfigs"] = [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]
    properties: dict[str, Any] = {
        "machineType": f"zones/{zone}/machineTypes/{machine}" if zone else machine,
        "disks": [{"boot": True, "autoDelete": True, "type": "PERSISTENT",
                   "initializeParams": {"sourceImage": desired["image"],
                                        "diskSizeGb": str(desired.get("disk_gb") or 50)}}],
        "networkInterfaces": [interface],
        "tags": {"items": sorted(desired.get("tags") or [])},
        "metadata": {"items": [{"key": STARTUP_SCRIPT,
                                "value": render_bootstrap(address, desired["bootstrap"])}]},
    }
    if desired.get("service_account"):
        properties["serviceAccounts"] = [{"email": desired["service_account"],
                                          "scopes": SCOPES}]
    return properties


def machine_attributes(address: str, properties: Mapping[str, Any],
                       recorded: Mapping[str, Any]) -> dict[str, Any]:
    interface = (properties.get("networkInterfaces") or [{}])[0]
    disk = next((d for d in properties.get("disks") or [] if d.get("boot")), {})
    script = next((i.get("value", "") for i in (properties.get("metadata") or {}).get("items")
                   or [] if i.get("key") == STARTUP_SCRIPT), "")
    accounts = properties.get("serviceAccounts") or []
    return {
        "machine_type": base(properties.get("machineType")),
        # An instance does not report its image (its disk does); the template does.
        "image": (disk.get("initializeParams") or {}).get("sourceImage", recorded.get("image")),
        "disk_gb": int((disk.get("initializeParams") or {}).get("diskSizeGb")
                       or recorded.get("disk_gb") or 50),
        "network": base(interface.get("network")),
        "subnetwork": base(interface.get("subnetwork")),
        "public_ip": bool(interface.get("accessConfigs")),
        "tags": sorted((properties.get("tags") or {}).get("items") or []),
        "service_account": accounts[0].get("email") if accounts else None,
        "bootstrap": bootstrap_behind(address, script, recorded.get("bootstrap")),
    }


class InstanceTemplate(GceType):
    """``gcp_instance_template``: what a worker boots with. Templates are immutable: any change
    makes a new one (its name carries a digest of its content, so the new one can exist next to
    the old while the group moves over: ``create_before_destroy``). Attributes: project,
    region (of the subnetwork), name, machine_type, image, disk_gb, network, subnetwork,
    public_ip, tags, service_account, bootstrap."""

    type_name = "gcp_instance_template"
    kind, message, field = "InstanceTemplates", "InstanceTemplate", "instance_template_resource"
    force_new = frozenset({"project", "region", "name", "machine_type", "image", "disk_gb",
                           "network", "subnetwork", "public_ip", "tags", "service_account",
                           "bootstrap"})

    def name_of(self, desired: Mapping[str, Any], limit: int | None = None) -> str:
        content = json.dumps({k: desired.get(k) for k in sorted(self.force_new)}, sort_keys=True)
        digest = hashlib.sha256(content.encode()).hexdigest()[:6]
        return lineage_name(self.ctx.owner, f"{desired['name']}-{digest}", 63)

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        properties = machine_properties(address, desired, None)
        properties["labels"] = owner_labels(self.ctx.owner, None)
        return {"properties": properties}

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        return {"region": recorded.get("region"),
                **machine_attributes(address, item.get("properties") or {}, recorded)}

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        return self.refreshed(address, prior, desired)  # every attribute forces replacement


class Instance(GceType):
    """``gcp_instance``: the head, on its reserved internal address. Attributes: project,
    region, zone, name, role, machine_type, image, disk_gb, network, subnetwork, network_ip,
    public_ip, tags, service_account, bootstrap, gcs_port, dashboard_port; computed ip,
    dashboard_url, gcs_address."""

    type_name = "gcp_instance"
    kind, message, field = "Instances", "Instance", "instance_resource"
    scope, labels = "zone", True
    force_new = frozenset({"project", "region", "zone", "name", "machine_type", "image",
                           "disk_gb", "network", "subnetwork", "network_ip", "public_ip", "tags",
                           "service_account", "bootstrap"})
    computed = GceType.computed | {"ip", "dashboard_url", "gcs_address", "status"}
    ignore_drift = frozenset({"status"})

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        return machine_properties(address, desired, desired["zone"])

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        interface = (item.get("networkInterfaces") or [{}])[0]
        ip = interface.get("networkIP")
        return {
            "region": recorded.get("region"), "role": recorded.get("role"),
            **machine_attributes(address, item, recorded),
            "network_ip": recorded.get("network_ip"),
            "gcs_port": recorded.get("gcs_port"), "dashboard_port": recorded.get("dashboard_port"),
            "ip": ip, "status": item.get("status"),
            "gcs_address": f"{ip}:{recorded.get('gcs_port')}",
            "dashboard_url": f"http://{ip}:{recorded.get('dashboard_port')}",
        }

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        return self.refreshed(address, prior, desired)  # only the ports: they name what runs

    def is_head(self, attributes) -> bool:
        return attributes.get("role") == "head"

    def head_health(self, record: LiveResource) -> str | None:
        where = self.where(record.attributes)
        found = ignore_codes(GONE, lambda: self._get(where, record.attributes["gce_name"],
                                                     record.address))
        if found is None:
            return f"instance {record.attributes['gce_name']} is gone"
        if found.get("status") != "RUNNING":
            return f"instance {record.attributes['gce_name']} is {found.get('status')}"
        return dashboard_gcs_health(str(record.attributes.get("dashboard_url")))


def named_ports(desired: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"name": p["name"], "port": int(p["port"])} for p in desired.get("named_ports") or []]


class InstanceGroup(GceType):
    """``gcp_instance_group``: an unmanaged zonal group holding the head, so the load balancer's
    backend service can send to the head's proxy too. Attributes: project, zone, name, network,
    named_ports, instances (instance self links)."""

    type_name = "gcp_instance_group"
    kind, message, field = "InstanceGroups", "InstanceGroup", "instance_group_resource"
    scope = "zone"
    force_new = frozenset({"project", "zone", "name", "network"})

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        return {"network": network_link(desired["project"], desired["network"]),
                "namedPorts": named_ports(desired)}

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        where = {"project": item["selfLink"].split("/projects/")[1].split("/")[0],
                 "zone": base(item.get("zone"))}
        # One call per group (the head's group holds one instance), not per instance.
        answer = self.api.call("InstanceGroups", "list_instances", **where,
                               instance_group=item["name"],
                               instance_groups_list_instances_request_resource=self.api.message(
                                   "InstanceGroupsListInstancesRequest", {"instanceState": "ALL"}))
        members = [to_dict(member) for member in answer._response.items]
        return {"network": base(item.get("network")),
                "named_ports": named_ports({"named_ports": item.get("namedPorts")}),
                "instances": sorted(short_link(m["instance"]) for m in members)}

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        live = super().create(address, {**desired, "instances": []}, token)
        return self.update(address, live, desired)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        where = self.where(desired)
        name = prior.attributes["gce_name"]
        have = set(prior.attributes.get("instances") or [])
        want = {short_link(i) for i in desired.get("instances") or []}
        if have - want:
            self.api.mutate(self.kind, "remove_instances", for_address=address, **where,
                            instance_group=name,
                            instance_groups_remove_instances_request_resource=self.api.message(
                                "InstanceGroupsRemoveInstancesRequest",
                                {"instances": [{"instance": i} for i in sorted(have - want)]}))
        if want - have:
            self.api.mutate(self.kind, "add_instances", for_address=address, **where,
                            instance_group=name,
                            instance_groups_add_instances_request_resource=self.api.message(
                                "InstanceGroupsAddInstancesRequest",
                                {"instances": [{"instance": i} for i in sorted(want - have)]}))
        if named_ports(desired) != prior.attributes.get("named_ports"):
            current = self._get(where, name, address)
            self.api.mutate(self.kind, "set_named_ports", for_address=address, **where,
                            instance_group=name,
                            instance_groups_set_named_ports_request_resource=self.api.message(
                                "InstanceGroupsSetNamedPortsRequest",
                                {"namedPorts": named_ports(desired),
                                 "fingerprint": current.get("fingerprint")}))
        return self.refreshed(address, prior, desired)


class InstanceGroupManager(GceType):
    """``gcp_instance_group_manager``: the workers, a zonal managed instance group (no
    autohealing, see the module docstring). Attributes: project, zone, name,
    base_instance_name, instance_template (self link), target_size, named_ports; computed
    instance_group (the group's self link, what a backend service names)."""

    type_name = "gcp_instance_group_manager"
    kind, message = "InstanceGroupManagers", "InstanceGroupManager"
    field = "instance_group_manager_resource"
    scope = "zone"
    force_new = frozenset({"project", "zone", "region", "name", "base_instance_name"})
    computed = GceType.computed | {"instance_group"}

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        return {"baseInstanceName": desired["base_instance_name"],
                "instanceTemplate": desired["instance_template"],
                "targetSize": int(desired["target_size"]),
                "namedPorts": named_ports(desired),
                # A new template reaches new instances only: a running worker is never
                # restarted by apply.
                "updatePolicy": {"type": "OPPORTUNISTIC"}}

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        return {"base_instance_name": item.get("baseInstanceName"),
                "instance_template": short_link(item.get("instanceTemplate", "")),
                "target_size": int(item.get("targetSize") or 0),
                "named_ports": named_ports({"named_ports": item.get("namedPorts")}),
                "instance_group": short_link(item.get("instanceGroup")),
                **({"region": recorded.get("region")} if "region" in recorded
                   and self.scope == "zone" else {})}

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        where = self.where(desired)
        name = prior.attributes["gce_name"]
        template = short_link(desired["instance_template"])
        if (template != prior.attributes.get("instance_template")
                or named_ports(desired) != prior.attributes.get("named_ports")):
            self.patch(address, prior, {"instanceTemplate": template,
                                        "versions": [{"instanceTemplate": template}],
                                        "namedPorts": named_ports(desired)})
        if int(desired["target_size"]) != prior.attributes.get("target_size"):
            self.api.mutate(self.kind, "resize", for_address=address, **where,
                            instance_group_manager=name, size=int(desired["target_size"]))
        return self.refreshed(address, prior, desired)


class RegionInstanceGroupManager(InstanceGroupManager):
    """``gcp_region_instance_group_manager``: the workers spread over a region's zones. Same
    attributes as :class:`InstanceGroupManager`, with region instead of zone."""

    type_name = "gcp_region_instance_group_manager"
    kind = "RegionInstanceGroupManagers"
    scope = "region"
    force_new = frozenset({"project", "region", "name", "base_instance_name"})

"""The resource kinds the fake serves: where each lives, its JSON ``kind``, which methods it has
and the hooks that give it its behaviour (see the modules named in each entry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import balancing, groups, instances, unmanaged, vpc


@dataclass(frozen=True)
class Kind:
    collection: str                  # the URL segment, e.g. "instanceGroupManagers"
    scopes: tuple[str, ...]          # "global", "regions", "zones"
    kind: str                        # "compute#instanceGroupManager"
    noun: str                        # in "The <noun> resource '...' is already being used by"
    build: Callable | None = None    # (world, res, params): checks and fills an insert
    rebuild: Callable | None = None  # (world, res, patch): the same for patch/update
                                     # (default: build)
    ready: Callable | None = None    # (world, res): the insert is DONE
    undo: Callable | None = None     # (world, res): the insert failed
    check_delete: Callable | None = None
    removed: Callable | None = None  # (world, res): the delete is DONE
    patched: Callable | None = None  # (world, res): a patch/update is DONE
    render: Callable | None = None   # (world, res, body): live fields of a read
    fingerprint: str = "none"        # patch/update: "required" or "optional" fingerprint
    labels: bool = False             # labels + labelFingerprint, setLabels
    patch: bool = False
    update: bool = False
    list_kinds: tuple[tuple[str, str], ...] = ()   # (scope kind, list kind) overrides

    def list_kind(self, scope_kind: str) -> str:
        return dict(self.list_kinds).get(scope_kind, self.kind + "List")




KINDS = {k.collection: k for k in [
    Kind("instances", ("zones",), "compute#instance", "instance",
         build=instances.build_instance, ready=lambda w, r: instances.instance_ready(r),
         labels=True),
    Kind("instanceTemplates", ("global",), "compute#instanceTemplate", "instance_template",
         build=instances.build_template),
    Kind("instanceGroupManagers", ("zones", "regions"), "compute#instanceGroupManager",
         "instance_group_manager", build=groups.build_mig, rebuild=groups.rebuild_mig,
         ready=groups.mig_ready, undo=groups.mig_undo, check_delete=groups.check_mig_delete,
         removed=groups.mig_removed, patched=groups.mig_patched, render=groups.render_mig,
         fingerprint="required", patch=True,
         list_kinds=(("regions", "compute#regionInstanceGroupManagerList"),)),
    Kind("instanceGroups", ("zones", "regions"), "compute#instanceGroup", "instance_group",
         build=unmanaged.build_group, render=groups.render_group,
         list_kinds=(("regions", "compute#regionInstanceGroupList"),)),
    Kind("healthChecks", ("global", "regions"), "compute#healthCheck", "health_check",
         build=balancing.build_health_check, patch=True, update=True),
    Kind("backendServices", ("global", "regions"), "compute#backendService", "backend_service",
         build=balancing.build_backend_service, render=balancing.render_backend_service,
         fingerprint="required", patch=True, update=True),
    Kind("urlMaps", ("global",), "compute#urlMap", "url_map", build=balancing.build_url_map,
         fingerprint="required", patch=True, update=True),
    Kind("targetHttpProxies", ("global",), "compute#targetHttpProxy", "target_http_proxy",
         build=balancing.build_proxy, fingerprint="required", patch=True),
    Kind("forwardingRules", ("global", "regions"), "compute#forwardingRule", "forwarding_rule",
         build=balancing.build_forwarding_rule, rebuild=balancing.rebuild_forwarding_rule,
         fingerprint="optional", labels=True,
         patch=True),
    Kind("addresses", ("global", "regions"), "compute#address", "address",
         build=vpc.build_address, check_delete=vpc.check_address_delete,
         render=vpc.render_address, labels=True),
    Kind("firewalls", ("global",), "compute#firewall", "firewall", build=vpc.build_firewall,
         patch=True, update=True),
    Kind("networks", ("global",), "compute#network", "network", build=vpc.build_network,
         ready=vpc.network_ready, removed=vpc.network_removed, render=vpc.render_network),
    Kind("subnetworks", ("regions",), "compute#subnetwork", "subnetwork",
         build=vpc.build_subnetwork),
]}

# Collections that exist both globally and regionally are named apart in the API reference
# (and here, for count() and inject()): the plain name is the global one, or the regional one
# for forwarding rules and addresses.
_REGIONAL_PREFIXED = ("instanceGroupManagers", "instanceGroups", "backendServices",
                      "healthChecks", "urlMaps", "targetHttpProxies")
_GLOBAL_PREFIXED = ("forwardingRules", "addresses")


def api_collection(scope_kind: str, collection: str) -> str:
    """The API reference's name of a collection, e.g. ``regionInstanceGroupManagers``."""
    if collection == "operations":
        return {"global": "globalOperations", "regions": "regionOperations",
                "zones": "zoneOperations"}[scope_kind]
    if scope_kind == "regions" and collection in _REGIONAL_PREFIXED:
        return "region" + collection[0].upper() + collection[1:]
    if scope_kind == "global" and collection in _GLOBAL_PREFIXED:
        return "global" + collection[0].upper() + collection[1:]
    return collection

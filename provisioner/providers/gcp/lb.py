"""GCP load balancing resource types: the global external Application Load Balancer chain
(health check -> backend service -> URL map -> target HTTP proxy -> global forwarding rule) and
the regional passthrough Network Load Balancer (regional health check -> regional backend
service -> regional forwarding rule). See provisioner.providers.base for the contract and
:mod:`provisioner.providers.gcp.common` for ownership and names.
"""

from __future__ import annotations

from typing import Any, Mapping

from provisioner.providers.base import LiveResource
from provisioner.providers.cloud import in_known_order
from provisioner.providers.gcp.common import GceType, short_link

HEALTH_FIELDS = {"interval_s": "checkIntervalSec", "timeout_s": "timeoutSec",
                 "healthy_threshold": "healthyThreshold",
                 "unhealthy_threshold": "unhealthyThreshold"}


class HealthCheck(GceType):
    """``gcp_health_check``: HTTP ``GET <path>`` on the Serve port, for routing only.
    Attributes: project, name, port, path, interval_s, timeout_s, healthy_threshold,
    unhealthy_threshold."""

    type_name = "gcp_health_check"
    kind, message, field = "HealthChecks", "HealthCheck", "health_check_resource"
    force_new = frozenset({"project", "name"})

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        return {"type": "HTTP",
                "httpHealthCheck": {"port": int(desired["port"]), "requestPath": desired["path"]},
                **{field: int(desired[key]) for key, field in HEALTH_FIELDS.items()}}

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        http = item.get("httpHealthCheck") or {}
        return {"port": http.get("port"), "path": http.get("requestPath"),
                **{key: item.get(field) for key, field in HEALTH_FIELDS.items()}}

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        self.patch(address, prior, self.body(address, desired))
        return self.refreshed(address, prior, desired)


class RegionHealthCheck(HealthCheck):
    """``gcp_region_health_check``: the same, regional (for a passthrough Network LB)."""

    type_name = "gcp_region_health_check"
    kind = "RegionHealthChecks"
    scope = "region"
    force_new = frozenset({"project", "region", "name"})


class BackendService(GceType):
    """``gcp_backend_service``: every node's Serve proxy behind the load balancer. Attributes:
    project, name, protocol (HTTP; TCP for a Network LB), load_balancing_scheme
    (EXTERNAL_MANAGED; EXTERNAL for a Network LB), port_name (the groups' named port),
    timeout_s, health_check (self link), backends (list of {group, balancing_mode})."""

    type_name = "gcp_backend_service"
    kind, message, field = "BackendServices", "BackendService", "backend_service_resource"
    force_new = frozenset({"project", "name", "load_balancing_scheme"})

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "protocol": desired["protocol"],
            "loadBalancingScheme": desired["load_balancing_scheme"],
            "timeoutSec": int(desired["timeout_s"]),
            "healthChecks": [desired["health_check"]],
            "backends": [self._backend(b) for b in desired.get("backends") or []],
        }
        if desired.get("port_name"):
            body["portName"] = desired["port_name"]
        return body

    @staticmethod
    def _backend(backend: Mapping[str, Any]) -> dict[str, Any]:
        mode = backend["balancing_mode"]
        body: dict[str, Any] = {"group": backend["group"], "balancingMode": mode}
        if mode == "UTILIZATION":
            body["maxUtilization"] = 0.8
        return body

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "protocol": item.get("protocol"),
            "load_balancing_scheme": item.get("loadBalancingScheme"),
            "port_name": item.get("portName"),
            "timeout_s": item.get("timeoutSec"),
            "health_check": short_link((item.get("healthChecks") or [None])[0]),
            "backends": in_known_order(
                [{"group": short_link(b.get("group")), "balancing_mode": b.get("balancingMode")}
                 for b in item.get("backends") or []],
                recorded.get("backends"), key=lambda b: (str(b.get("group")),
                                                         str(b.get("balancing_mode")))),
        }

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        self.patch(address, prior, self.body(address, desired))
        return self.refreshed(address, prior, desired)


class RegionBackendService(BackendService):
    """``gcp_region_backend_service``: the same, regional (a passthrough Network LB)."""

    type_name = "gcp_region_backend_service"
    kind = "RegionBackendServices"
    scope = "region"
    force_new = frozenset({"project", "region", "name", "load_balancing_scheme"})


class UrlMap(GceType):
    """``gcp_url_map``: every path to the backend service. Attributes: project, name,
    default_service (self link)."""

    type_name = "gcp_url_map"
    kind, message, field = "UrlMaps", "UrlMap", "url_map_resource"
    force_new = frozenset({"project", "name"})

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        return {"defaultService": desired["default_service"]}

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        return {"default_service": short_link(item.get("defaultService"))}

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        self.patch(address, prior, self.body(address, desired))
        return self.refreshed(address, prior, desired)


class TargetHttpProxy(GceType):
    """``gcp_target_http_proxy``: the HTTP proxy in front of the URL map. Attributes: project,
    name, url_map (self link)."""

    type_name = "gcp_target_http_proxy"
    kind, message, field = "TargetHttpProxies", "TargetHttpProxy", "target_http_proxy_resource"
    force_new = frozenset({"project", "name"})

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        return {"urlMap": desired["url_map"]}

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        return {"url_map": short_link(item.get("urlMap"))}

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        self.api.mutate(self.kind, "set_url_map", for_address=address, **self.where(desired),
                        target_http_proxy=prior.attributes["gce_name"],
                        url_map_reference_resource=self.api.message(
                            "UrlMapReference", {"urlMap": desired["url_map"]}))
        return self.refreshed(address, prior, desired)


class GlobalForwardingRule(GceType):
    """``gcp_global_forwarding_rule``: the load balancer's address and port. Attributes:
    project, name, target (the proxy's self link), port_range, load_balancing_scheme; computed
    ip_address (the output)."""

    type_name = "gcp_global_forwarding_rule"
    kind, message, field = "GlobalForwardingRules", "ForwardingRule", "forwarding_rule_resource"
    labels = True
    force_new = frozenset({"project", "name", "port_range", "load_balancing_scheme"})
    computed = GceType.computed | {"ip_address"}

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        return {"IPProtocol": "TCP", "portRange": str(desired["port_range"]),
                "loadBalancingScheme": desired["load_balancing_scheme"],
                "target": desired["target"]}

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        return {"target": short_link(item.get("target")),
                "port_range": _port_range(item.get("portRange")),
                "load_balancing_scheme": item.get("loadBalancingScheme"),
                "ip_address": item.get("IPAddress")}

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        self.api.mutate(self.kind, "set_target", for_address=address, **self.where(desired),
                        forwarding_rule=prior.attributes["gce_name"],
                        target_reference_resource=self.api.message(
                            "TargetReference", {"target": desired["target"]}))
        return self.refreshed(address, prior, desired)


class ForwardingRule(GceType):
    """``gcp_forwarding_rule``: a regional passthrough Network LB's address and port, on a
    regional backend service. Attributes: project, region, name, backend_service (self link),
    port_range, load_balancing_scheme (EXTERNAL); computed ip_address."""

    type_name = "gcp_forwarding_rule"
    kind, message, field = "ForwardingRules", "ForwardingRule", "forwarding_rule_resource"
    scope, labels = "region", True
    force_new = frozenset({"project", "region", "name", "backend_service", "port_range",
                           "load_balancing_scheme"})
    computed = GceType.computed | {"ip_address"}

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        return {"IPProtocol": "TCP", "portRange": str(desired["port_range"]),
                "loadBalancingScheme": desired["load_balancing_scheme"],
                "backendService": desired["backend_service"]}

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        return {"backend_service": short_link(item.get("backendService")),
                "port_range": _port_range(item.get("portRange")),
                "load_balancing_scheme": item.get("loadBalancingScheme"),
                "ip_address": item.get("IPAddress")}

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        return self.refreshed(address, prior, desired)  # every attribute forces replacement


def _port_range(value: Any) -> str:
    """GCE reports ``80-80`` for a rule created with ``80``."""
    text = str(value or "")
    low, _, high = text.partition("-")
    return low if high == low else text

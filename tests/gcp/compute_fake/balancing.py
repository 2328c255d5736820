"""Load-balancing parts: health checks, backend services, URL maps, target HTTP proxies and
forwarding rules (global and regional), with the checks GCE makes on them.

Rules taken from the API reference (field docs in google/cloud/compute_v1/types/compute.py): "at
most one health check can be specified for each backend service. Backend services with instance
group or zonal NEG backends must have a health check"; backend service, URL map and target proxy
fingerprints "must be provided in order to update" (else 412 conditionNotMet); forwarding rules
take an IPAddress as a literal or a reference to a reserved address and are given an ephemeral
one otherwise. From GCE's behaviour: a global forwarding rule to a target HTTP proxy accepts
only ports 80 and 8080 (the classic load balancer's rule; the fake applies it to
EXTERNAL_MANAGED too, which may be stricter than GCE, never looser); the forwarding rule's
loadBalancingScheme must match the backend services behind it (EXTERNAL for the classic
Application LB, EXTERNAL_MANAGED for the global external one).
"""

from __future__ import annotations

import ipaddress
import re

from . import errors, refs
from .common import check_labels, refresh_fingerprint, require, set_labels
from .errors import invalid
from .links import API, parse_ref, region_of
from .network import claim_internal_ip, default_subnetwork, external_ip, subnetwork_of

_HC_TYPES = {"HTTP": ("httpHealthCheck", 80), "HTTPS": ("httpsHealthCheck", 443),
             "HTTP2": ("http2HealthCheck", 443), "TCP": ("tcpHealthCheck", 80),
             "SSL": ("sslHealthCheck", 443), "GRPC": ("grpcHealthCheck", None)}
_SCHEMES = {"global": ("EXTERNAL", "EXTERNAL_MANAGED", "INTERNAL_SELF_MANAGED"),
            "regional": ("EXTERNAL", "EXTERNAL_MANAGED", "INTERNAL", "INTERNAL_MANAGED")}
_PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "H2C", "TCP", "SSL", "UDP", "GRPC", "UNSPECIFIED")
_PORT_RANGE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?\Z")


def build_health_check(world, res, params: dict) -> None:
    body = res.body
    require(body, ("type",))
    if body["type"] not in _HC_TYPES:
        raise invalid("resource.type", body["type"], "Unknown health check type.")
    for key, default in (("checkIntervalSec", 5), ("timeoutSec", 5), ("healthyThreshold", 2),
                         ("unhealthyThreshold", 2)):
        body.setdefault(key, default)
    if body["timeoutSec"] > body["checkIntervalSec"]:
        raise invalid("resource.timeoutSec", body["timeoutSec"],
                      "Timeout sec must be less than or equal to check interval sec.")
    sub, port = _HC_TYPES[body["type"]]
    for other, _ in _HC_TYPES.values():
        if other != sub and other in body:
            raise invalid(f"resource.{other}", "", f"The health check type is {body['type']}; "
                          f"only {sub} may be set.")
    if sub not in body:   # GCE: "Invalid value for field 'resource.httpHealthCheck': ''.
        raise invalid(f"resource.{sub}", "", f"{body['type']} healthCheck missing.")  # HTTP..."
    spec = body[sub]
    if spec.get("portName") and "port" not in spec:
        spec.setdefault("portSpecification", "USE_NAMED_PORT")
    elif spec.get("portSpecification") != "USE_SERVING_PORT":
        if port is None and "port" not in spec:
            raise errors.required(f"resource.{sub}.port")
        spec.setdefault("port", port)
        spec.setdefault("portSpecification", "USE_FIXED_PORT")
    if body["type"] in ("HTTP", "HTTPS", "HTTP2"):
        spec.setdefault("requestPath", "/")
    if body["type"] != "GRPC":
        spec.setdefault("proxyHeader", "NONE")


def build_backend_service(world, res, params: dict) -> None:
    body = res.body
    level = "global" if res.scope == "global" else "regional"
    body.setdefault("loadBalancingScheme", "EXTERNAL")
    if body["loadBalancingScheme"] not in _SCHEMES[level]:
        raise invalid("resource.loadBalancingScheme", body["loadBalancingScheme"],
                      f"Not a valid scheme for a {level} backend service.")
    internal = body["loadBalancingScheme"] == "INTERNAL"
    body.setdefault("protocol", "TCP" if internal else "HTTP")
    if body["protocol"] not in _PROTOCOLS:
        raise invalid("resource.protocol", body["protocol"], "Unknown protocol.")
    if not internal:
        body.setdefault("portName", "http")
        body.setdefault("port", 80)
    body.setdefault("timeoutSec", 30)
    body.setdefault("sessionAffinity", "NONE")
    body.setdefault("affinityCookieTtlSec", 0)
    body.setdefault("connectionDraining", {"drainingTimeoutSec": 300 if not internal else 0})
    if level == "global":
        body.setdefault("enableCDN", False)
    checks = body.get("healthChecks") or []
    if len(checks) > 1:
        raise invalid("resource.healthChecks", checks,
                      "Currently, at most one health check can be specified for each backend "
                      "service.")
    seen = set()
    for i, backend in enumerate(body.get("backends") or []):
        require(backend, ("group",), f"resource.backends[{i}]")
        if backend["group"] in seen:
            raise invalid(f"resource.backends[{i}].group", backend["group"],
                          "Duplicate backend group.")
        seen.add(backend["group"])
        if not internal:
            backend.setdefault("balancingMode", "UTILIZATION")
            if backend["balancingMode"] == "UTILIZATION":
                backend.setdefault("maxUtilization", 0.8)
        else:
            backend.setdefault("balancingMode", "CONNECTION")
        backend.setdefault("capacityScaler", 1.0)
    if seen and not checks:
        raise invalid("resource.healthChecks", "", "Backend services with instance group or "
                      "zonal NEG backends must have a health check.")
    refresh_fingerprint(body)


def render_backend_service(world, res, body: dict) -> None:
    users = [r for r in world.referrers(res.path) if r.state != "creating"
             and r.collection in ("urlMaps", "forwardingRules", "targetHttpProxies")]
    if users:
        body["usedBy"] = [{"reference": r.link} for r in users]


def build_url_map(world, res, params: dict) -> None:
    body = res.body
    if not body.get("defaultService") and not body.get("defaultUrlRedirect"):
        raise errors.required("resource.defaultService")
    matchers = {m.get("name") for m in body.get("pathMatchers") or []}
    for i, matcher in enumerate(body.get("pathMatchers") or []):
        require(matcher, ("name",), f"resource.pathMatchers[{i}]")
    for i, rule in enumerate(body.get("hostRules") or []):
        require(rule, ("hosts", "pathMatcher"), f"resource.hostRules[{i}]")
        if rule["pathMatcher"] not in matchers:
            raise invalid(f"resource.hostRules[{i}].pathMatcher", rule["pathMatcher"],
                          "The path matcher is not found in the URL map.")
    refresh_fingerprint(body)


def build_proxy(world, res, params: dict) -> None:
    require(res.body, ("urlMap",))
    refresh_fingerprint(res.body)


def _backend_services_behind(world, target_link: str) -> list:
    """The backend services a target HTTP proxy leads to, through its URL map."""
    proxy = world.visible(parse_ref(target_link, world.project).path)
    url_map = world.visible(parse_ref(proxy.body["urlMap"], world.project).path)
    found = []
    for _, ref in refs.targets("urlMaps", url_map.body, world.project):
        service = world.visible(ref.path)
        if service is not None:
            found.append(service)
    return found


def build_forwarding_rule(world, res, params: dict) -> None:
    body = res.body
    regional = res.scope != "global"
    if regional and not body.get("target") and not body.get("backendService"):
        raise errors.required("resource.target")
    if not regional:
        require(body, ("target",))
    body.setdefault("IPProtocol", "TCP")
    body.setdefault("loadBalancingScheme", "EXTERNAL")
    scheme = body["loadBalancingScheme"]
    internal = scheme in ("INTERNAL", "INTERNAL_MANAGED")
    if not internal:
        body.setdefault("networkTier", "PREMIUM")
    if body.get("portRange"):
        match = _PORT_RANGE.match(str(body["portRange"]))
        if not match:
            raise invalid("resource.portRange", body["portRange"], "Invalid port range.")
        low, high = match.group(1), match.group(2) or match.group(1)
        body["portRange"] = f"{low}-{high}"
    check_target(world, body)
    if internal:
        region = region_of(res.scope)
        if not body.get("subnetwork"):
            network = (body.get("network")
                       or f"{API}projects/{world.project}/global/networks/default")
            subnet = default_subnetwork(world, region, network)
            if subnet is None:
                raise errors.required("resource.subnetwork")
            body["subnetwork"] = subnet.link
        subnet = subnetwork_of(world, body["subnetwork"])
        body.setdefault("network", subnet.body["network"])
    _assign_ip(world, res)
    set_labels(body, check_labels(body.get("labels")))
    refresh_fingerprint(body)


def check_target(world, body: dict) -> None:
    """Ports and load-balancing scheme of a forwarding rule against what it points to."""
    scheme = body["loadBalancingScheme"]
    if body.get("target") and parse_ref(body["target"], world.project).collection == \
            "targetHttpProxies":
        if not body.get("portRange"):
            raise errors.required("resource.portRange")
        if body["portRange"] not in ("80-80", "8080-8080"):
            raise invalid("resource.portRange", body["portRange"], "Invalid port specified "
                          "for target HTTP proxy. Allowed ports are: 80, 8080.")
        for service in _backend_services_behind(world, body["target"]):
            if service.body["loadBalancingScheme"] != scheme:
                raise invalid("resource.loadBalancingScheme", scheme,
                              f"The backend service '{service.path}' has load balancing scheme "
                              f"{service.body['loadBalancingScheme']}; they must match.")
    if body.get("backendService"):
        service = world.visible(parse_ref(body["backendService"], world.project).path)
        if service.body["loadBalancingScheme"] != scheme:
            raise invalid("resource.loadBalancingScheme", scheme, "It must match the backend "
                          "service's load balancing scheme.")


def rebuild_forwarding_rule(world, res, patch: dict) -> None:
    check_target(world, res.body)
    refresh_fingerprint(res.body)


def _assign_ip(world, res) -> None:
    body = res.body
    value = body.get("IPAddress")
    internal = bool(body.get("subnetwork")) and body["loadBalancingScheme"].startswith("INTERNAL")
    ref = parse_ref(value, world.project) if value else None
    if ref is not None:
        address = world.visible(ref.path)
        if ref.collection != "addresses" or address is None or ref.scope != res.scope:
            raise invalid("resource.IPAddress", value,
                          "The referenced address resource cannot be found.")
        value = address.body["address"]
    if internal:
        subnet = subnetwork_of(world, body["subnetwork"])
        body["IPAddress"] = claim_internal_ip(world, subnet, value, "resource.IPAddress",
                                              claimant=res)
        return
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise invalid("resource.IPAddress", value, "Invalid IP address.") from None
        owned = [a for a in world.in_scope(res.scope, "addresses", states=("ready",))
                 if a.body.get("address") == value]
        if not owned:
            raise invalid("resource.IPAddress", value, "The IP address is not a static "
                          "address reserved in this project.")
        body["IPAddress"] = value
        return
    body["IPAddress"] = external_ip(world, "global" if res.scope == "global" else "regional")

"""Load-balancing parts: health checks, backend services, URL maps, target HTTP proxies and
forwarding rules (global and regional), with the checks GCE makes on them.

Rules taken from the API reference (field docs in google/cloud/compute_v1/types/compute.py): "at
most one health check can be specified for each backend service. Backend services with instance
group or zonal NEG backends must have a health check"; backend service, URL map and target proxy
fingerprints "must be provided in order to update" (else 412 conditionNotMet); forwarding rules
take an IPAddress as a literal or a reference to a reserved address and are given an ephemeral
one otherwise; "For internal passthrough Network Load Balancers and external passthrough Network
Load Balancers, omit port_name" (and port); maxRate / maxRatePerInstance are "Not available if
the backend's balancingMode is CONNECTION", maxConnections not with RATE; capacityScaler is 0 or
in [0.1, 1.0], and not 0 with a single backend; a forwarding rule's ports, portRange and allPorts
are mutually exclusive, ports (up to five) and allPorts only for passthrough rules (the ones with
a backendService), portRange not for the internal passthrough one. The balancing modes per load
balancer follow cloud.google.com/load-balancing/docs/backend-service (Application LBs:
UTILIZATION or RATE; proxy Network LBs: UTILIZATION or CONNECTION; passthrough Network LBs:
CONNECTION, the default there). GCE's own words where quoted in public issues: "Duplicate
instance groups in backend service." (spinnaker/spinnaker#6136), "Both maxRate or
maxRatePerInstance cannot be set." (hashicorp/terraform-provider-google#1051).

From GCE's behaviour, where the fake may be stricter than GCE, never looser: a global forwarding
rule to a target HTTP proxy accepts only ports 80 and 8080 (the classic load balancer's rule,
applied to EXTERNAL_MANAGED too) over TCP; the forwarding rule's loadBalancingScheme must match
the backend services behind it (EXTERNAL for the classic Application LB, EXTERNAL_MANAGED for the
global external one), and a passthrough rule's IPProtocol the backend service's protocol; a
regional backend service other than the internal passthrough one needs a regional health
check; a passthrough backend service takes TCP, UDP or UNSPECIFIED; RATE needs maxRate or
maxRatePerInstance; a backend group must have a network (``unmanaged.check_backend_group``).
The messages of these last rules were not seen quoted.
"""

from __future__ import annotations

import ipaddress
import re

from . import errors, refs
from .common import check_labels, refresh_fingerprint, require, set_labels
from .errors import invalid
from .links import API, parse_ref, region_of
from .network import claim_internal_ip, default_subnetwork, external_ip, subnetwork_of
from .unmanaged import check_backend_group

_HC_TYPES = {"HTTP": ("httpHealthCheck", 80), "HTTPS": ("httpsHealthCheck", 443),
             "HTTP2": ("http2HealthCheck", 443), "TCP": ("tcpHealthCheck", 80),
             "SSL": ("sslHealthCheck", 443), "GRPC": ("grpcHealthCheck", None)}
_SCHEMES = {"global": ("EXTERNAL", "EXTERNAL_MANAGED", "INTERNAL_SELF_MANAGED"),
            "regional": ("EXTERNAL", "EXTERNAL_MANAGED", "INTERNAL", "INTERNAL_MANAGED")}
_PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "H2C", "TCP", "SSL", "UDP", "GRPC", "UNSPECIFIED")
_PORT_RANGE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?\Z")
_IP_PROTOCOLS = ("TCP", "UDP", "ESP", "AH", "SCTP", "ICMP", "L3_DEFAULT")


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


def lb_family(level: str, scheme: str, protocol: str) -> str:
    """Which load balancer a backend service is for ("Backend services product and scheme
    table", cloud.google.com/load-balancing/docs/backend-service): a regional EXTERNAL or
    INTERNAL one is a passthrough Network LB; TCP or SSL otherwise is a proxy Network LB; the
    rest are Application LBs."""
    if level == "regional" and scheme in ("EXTERNAL", "INTERNAL"):
        return "passthrough"
    return "proxy" if protocol in ("TCP", "SSL") else "application"


# Balancing modes each family takes for instance group backends (load-balancing/docs/
# backend-service#balancing-mode): the first is the default.
_MODES = {"application": ("UTILIZATION", "RATE"), "proxy": ("UTILIZATION", "CONNECTION"),
          "passthrough": ("CONNECTION",)}


def build_backend_service(world, res, params: dict) -> None:
    body = res.body
    level = "global" if res.scope == "global" else "regional"
    body.setdefault("loadBalancingScheme", "EXTERNAL")
    scheme = body["loadBalancingScheme"]
    if scheme not in _SCHEMES[level]:
        raise invalid("resource.loadBalancingScheme", scheme,
                      f"Not a valid scheme for a {level} backend service.")
    passthrough = level == "regional" and scheme in ("EXTERNAL", "INTERNAL")
    body.setdefault("protocol", "TCP" if passthrough else "HTTP")
    if body["protocol"] not in _PROTOCOLS:
        raise invalid("resource.protocol", body["protocol"], "Unknown protocol.")
    family = lb_family(level, scheme, body["protocol"])
    if passthrough:
        if body["protocol"] not in ("TCP", "UDP", "UNSPECIFIED"):
            raise invalid("resource.protocol", body["protocol"], "A passthrough Network Load "
                          "Balancer's backend service takes TCP, UDP or UNSPECIFIED.")
        for key in ("portName", "port"):   # "For ... passthrough Network Load Balancers, omit
            if key in body:                # port_name" (BackendService.port_name)
                raise invalid(f"resource.{key}", body[key], f"{key} must be omitted for a "
                              "passthrough Network Load Balancer.")
    else:
        body.setdefault("portName", "http")
        body.setdefault("port", 80)
    body.setdefault("timeoutSec", 30)
    body.setdefault("sessionAffinity", "NONE")
    body.setdefault("affinityCookieTtlSec", 0)
    body.setdefault("connectionDraining",
                    {"drainingTimeoutSec": 0 if scheme == "INTERNAL" else 300})
    if level == "global":
        body.setdefault("enableCDN", False)
    checks = body.get("healthChecks") or []
    if len(checks) > 1:
        raise invalid("resource.healthChecks", checks,
                      "Currently, at most one health check can be specified for each backend "
                      "service.")
    for i, link in enumerate(checks):
        # only the internal passthrough LB may use a global health check from a region
        if level == "regional" and scheme != "INTERNAL" and "/global/" in link:
            raise invalid(f"resource.healthChecks[{i}]", link, "This load balancer needs a "
                          "regional health check in the backend service's region.")
    backends = body.get("backends") or []
    seen = set()
    for i, backend in enumerate(backends):
        require(backend, ("group",), f"resource.backends[{i}]")
        if backend["group"] in seen:
            raise invalid(f"resource.backends[{i}].group", backend["group"],
                          "Duplicate instance groups in backend service.")
        seen.add(backend["group"])
        group = world.visible(parse_ref(backend["group"], world.project).path)
        check_backend_group(group, f"resource.backends[{i}].group")
        _check_backend(backend, i, family, len(backends))
    if seen and not checks:
        raise invalid("resource.healthChecks", "", "Backend services with instance group or "
                      "zonal NEG backends must have a health check.")
    refresh_fingerprint(body)


def _check_backend(backend: dict, i: int, family: str, count: int) -> None:
    """Balancing mode and capacity settings (field docs of compute_v1 ``Backend``)."""
    field = f"resource.backends[{i}]"
    modes = _MODES[family]
    mode = backend.setdefault("balancingMode", modes[0])
    if mode not in modes:
        raise invalid(f"{field}.balancingMode", mode, "Balancing mode must be one of "
                      f"{', '.join(modes)} for this load balancer.")
    rates = [key for key in ("maxRate", "maxRatePerInstance") if key in backend]
    connections = [key for key in ("maxConnections", "maxConnectionsPerInstance")
                   if key in backend]
    if len(rates) > 1:   # GCE's words, quoted in hashicorp/terraform-provider-google#1051
        raise invalid(field, "", "Both maxRate or maxRatePerInstance cannot be set.")
    if len(connections) > 1:
        raise invalid(field, "", "Both maxConnections or maxConnectionsPerInstance cannot be "
                      "set.")
    if mode == "RATE" and not rates:
        raise invalid(f"{field}.maxRatePerInstance", "", "RATE balancing mode needs maxRate or "
                      "maxRatePerInstance.")
    if mode == "CONNECTION" and rates:
        raise invalid(f"{field}.{rates[0]}", backend[rates[0]],
                      "Not available with the CONNECTION balancing mode.")
    if mode == "RATE" and connections:
        raise invalid(f"{field}.{connections[0]}", backend[connections[0]],
                      "Not available with the RATE balancing mode.")
    if mode == "UTILIZATION":
        backend.setdefault("maxUtilization", 0.8)
    if not 0.0 <= float(backend.get("maxUtilization", 0.0)) <= 1.0:
        raise invalid(f"{field}.maxUtilization", backend["maxUtilization"],
                      "Must be in the range [0.0, 1.0].")
    scaler = float(backend.setdefault("capacityScaler", 1.0))
    if scaler != 0.0 and not 0.1 <= scaler <= 1.0:
        raise invalid(f"{field}.capacityScaler", scaler, "Must be 0 or in [0.1, 1.0].")
    if scaler == 0.0 and count == 1:
        raise invalid(f"{field}.capacityScaler", scaler, "A capacity scaler of 0 is not "
                      "allowed when the backend service has only one backend.")


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
    if body.get("target") and body.get("backendService"):
        raise invalid("resource.backendService", body["backendService"], "A forwarding rule "
                      "has either a target or a backendService, not both.")
    body.setdefault("IPProtocol", "TCP")
    if body["IPProtocol"] not in _IP_PROTOCOLS:
        raise invalid("resource.IPProtocol", body["IPProtocol"], "Unknown IP protocol.")
    body.setdefault("loadBalancingScheme", "EXTERNAL")
    scheme = body["loadBalancingScheme"]
    internal = scheme in ("INTERNAL", "INTERNAL_MANAGED")
    if not internal:
        body.setdefault("networkTier", "PREMIUM")
    if body.get("portRange"):
        body["portRange"] = _port_range(body["portRange"], "resource.portRange")
    _check_ports(body)
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
        if body["IPProtocol"] != "TCP":
            raise invalid("resource.IPProtocol", body["IPProtocol"], "A forwarding rule to a "
                          "target HTTP proxy takes TCP.")
    if body.get("backendService"):
        service = world.visible(parse_ref(body["backendService"], world.project).path)
        if service.body["loadBalancingScheme"] != scheme:
            raise invalid("resource.loadBalancingScheme", scheme, "It must match the backend "
                          "service's load balancing scheme.")
        protocol = service.body.get("protocol")
        if (protocol in ("TCP", "UDP") and body["IPProtocol"] != protocol) or (
                body["IPProtocol"] == "L3_DEFAULT" and protocol != "UNSPECIFIED"):
            raise invalid("resource.IPProtocol", body["IPProtocol"], f"The backend service's "
                          f"protocol is {protocol}; the forwarding rule's must match it.")


def _port_range(value: object, field: str) -> str:
    """``"80"`` or ``"8000-8100"`` as GCE stores it (``"80-80"``)."""
    match = _PORT_RANGE.match(str(value))
    low, high = (int(match.group(1)), int(match.group(2) or match.group(1))) if match \
        else (0, 0)
    if not 1 <= low <= high <= 65535:
        raise invalid(field, value, "Invalid port range.")
    return f"{low}-{high}"


def _check_ports(body: dict) -> None:
    """ports, portRange and allPorts (ForwardingRule field docs): mutually exclusive; ports
    (up to five) and allPorts only on passthrough rules (with a backendService); portRange not on
    an internal passthrough rule; TCP, UDP or SCTP (allPorts also L3_DEFAULT)."""
    given = [key for key in ("ports", "portRange", "allPorts") if body.get(key)]
    if len(given) > 1:
        raise invalid(f"resource.{given[1]}", body[given[1]], "The ports, portRange, and "
                      "allPorts fields are mutually exclusive.")
    if not given:
        return
    key = given[0]
    passthrough = bool(body.get("backendService"))
    if key in ("ports", "allPorts") and not passthrough:
        raise invalid(f"resource.{key}", body[key], f"{key} is only for passthrough Network "
                      "Load Balancers (a forwarding rule with a backendService).")
    if key == "portRange" and passthrough and body["loadBalancingScheme"] == "INTERNAL":
        raise invalid("resource.portRange", body["portRange"], "An internal passthrough "
                      "Network Load Balancer takes ports or allPorts, not portRange.")
    if key == "ports":
        if len(body["ports"]) > 5:
            raise invalid("resource.ports", body["ports"], "You can specify a list of up to "
                          "five ports.")
        for i, port in enumerate(body["ports"]):
            _port_range(port, f"resource.ports[{i}]")
    protocols = ("TCP", "UDP", "SCTP") + (("L3_DEFAULT",) if key == "allPorts" else ())
    if body["IPProtocol"] not in protocols:
        raise invalid("resource.IPProtocol", body["IPProtocol"], f"{key} needs IPProtocol "
                      f"{', '.join(protocols)}.")


def rebuild_forwarding_rule(world, res, patch: dict) -> None:
    _check_ports(res.body)
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

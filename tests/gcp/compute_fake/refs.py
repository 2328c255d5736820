"""References between resources: which fields hold them, what they may point to, and the check
on insert/update that the target exists (GCE answers 400 ``invalid`` for a missing or wrong
reference and stores every reference as a full ``https://www.googleapis.com/compute/v1/`` URL).
"""

from __future__ import annotations

from typing import Iterator

from .errors import invalid
from .links import Ref, parse_ref, region_of

NET = ("networks",)
SUBNET = ("subnetworks",)
HC = ("healthChecks",)
BS = ("backendServices",)
GROUP = ("instanceGroups",)
TEMPLATE = ("instanceTemplates",)

# collection -> [(field path, collections the reference may point to)]; "[]" walks a list.
FIELDS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "instances": [("networkInterfaces[].network", NET),
                  ("networkInterfaces[].subnetwork", SUBNET)],
    "instanceTemplates": [("properties.networkInterfaces[].network", NET),
                          ("properties.networkInterfaces[].subnetwork", SUBNET)],
    "instanceGroupManagers": [("instanceTemplate", TEMPLATE),
                              ("versions[].instanceTemplate", TEMPLATE)],
    "instanceGroups": [("network", NET), ("subnetwork", SUBNET)],
    "backendServices": [("healthChecks[]", HC), ("backends[].group", GROUP),
                        ("network", NET)],
    "urlMaps": [("defaultService", BS), ("pathMatchers[].defaultService", BS),
                ("pathMatchers[].pathRules[].service", BS),
                ("pathMatchers[].routeRules[].service", BS)],
    "targetHttpProxies": [("urlMap", ("urlMaps",))],
    "forwardingRules": [("target", ("targetHttpProxies",)), ("backendService", BS),
                        ("network", NET), ("subnetwork", SUBNET)],
    "addresses": [("network", NET), ("subnetwork", SUBNET)],
    "firewalls": [("network", NET)],
    "subnetworks": [("network", NET)],
}

NOUNS = {"networks": "network", "subnetworks": "subnetwork", "healthChecks": "health check",
         "backendServices": "backend service", "instanceGroups": "instance group",
         "instanceTemplates": "instance template", "urlMaps": "url map",
         "targetHttpProxies": "target http proxy"}


# Load-balancing parts that must sit at the same level (global or regional) as their user.
_SAME_LEVEL = ("backendServices", "urlMaps", "targetHttpProxies")


def walk(body: dict, path: str) -> Iterator[tuple[str, object, object]]:
    """(label, container, key) for every value at ``path`` in ``body``."""
    parts = path.split(".")

    def go(node, i, label):
        if i == len(parts):
            return
        part = parts[i]
        many = part.endswith("[]")
        key = part[:-2] if many else part
        if not isinstance(node, dict) or key not in node:
            return
        here = f"{label}.{key}" if label else key
        if many:
            for n, item in enumerate(node[key] or []):
                if i == len(parts) - 1:
                    yield f"{here}[{n}]", node[key], n
                else:
                    yield from go(item, i + 1, f"{here}[{n}]")
        elif i == len(parts) - 1:
            yield here, node, key
        else:
            yield from go(node[key], i + 1, here)

    yield from go(body, 0, "")


def targets(collection: str, body: dict, project: str) -> Iterator[tuple[str, Ref]]:
    """(field label, reference) for every well-formed reference the body holds."""
    for path, _ in FIELDS.get(collection, []):
        for label, container, key in walk(body, path):
            ref = parse_ref(container[key], project)
            if ref is not None:
                yield label, ref


def resolve(world, collection: str, scope: str, body: dict) -> None:
    """Check every reference exists and is of an allowed kind; rewrite it as a full URL."""
    mine = region_of(scope)
    for path, allowed in FIELDS.get(collection, []):
        for label, container, key in walk(body, path):
            value = container[key]
            if value in (None, ""):
                continue
            ref = parse_ref(value, world.project)
            field = f"resource.{label}"
            noun = NOUNS[allowed[0]]
            if ref is None:
                raise invalid(field, value, "The URL is malformed.")
            theirs = region_of(ref.scope)
            wrong_scope = bool(mine and theirs and mine != theirs)
            if ref.collection in _SAME_LEVEL and (scope == "global") != (ref.scope == "global"):
                wrong_scope = True  # a global LB part takes global parts, a regional one regional
            if ref.collection == "healthChecks" and scope == "global" and ref.scope != "global":
                wrong_scope = True
            if ref.collection not in allowed and ref.project == world.project:
                # GCE's words (hashicorp/terraform-provider-google#4951: a backend pointing at
                # an instanceGroupManagers URL instead of its instance group)
                raise invalid(field, value, f"Unexpected resource collection "
                              f"'{ref.collection}'.")
            target = world.visible(ref.path)
            if (ref.collection not in allowed or ref.project != world.project or wrong_scope
                    or target is None):
                raise invalid(field, value, f"The referenced {noun} resource cannot be found.")
            container[key] = ref.link

"""The API methods: insert / get / list / delete / patch / update for every kind, the custom
methods (setLabels, setTarget, setUrlMap, resize, listManagedInstances, setNamedPorts,
listInstances, addInstances, removeInstances) and the operations services. Each mutating method
checks everything first (errors come back at once, as HTTP errors) and returns an operation
whose effect applies when DONE."""

from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass

from . import errors, groups, refs, unmanaged
from .common import (check_fingerprint, check_labels, merge_patch, refresh_fingerprint,
                     require, set_labels)
from .errors import invalid
from .kinds import KINDS, Kind, api_collection
from .links import API, check_name, fingerprint
from .listing import page
from .world import Resource

_PATH_PATTERN = "[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19}"   # a name or an id
_PATH_NAME = re.compile(f"(?:{_PATH_PATTERN})\\Z")
MUTATING = ("insert", "delete", "patch", "update", "setLabels", "setTarget", "setUrlMap",
            "resize", "setNamedPorts", "addInstances", "removeInstances")
_OUTPUT_ONLY = ("kind", "id", "creationTimestamp", "selfLink", "zone", "region", "status",
                "users", "usedBy", "labelFingerprint", "currentActions", "instanceGroup",
                "size")
_KEEP_ON_UPDATE = ("kind", "id", "creationTimestamp", "selfLink", "zone", "region", "labels",
                   "labelFingerprint", "instanceGroup", "IPAddress", "address")


@dataclass
class Route:
    http_method: str
    scope: str                # "global", "regions/<r>", "zones/<z>"
    collection: str           # URL segment
    name: str | None
    verb: str | None

    @property
    def scope_kind(self) -> str:
        return self.scope.split("/", 1)[0]

    @property
    def api_method(self) -> str:
        if self.verb:
            return self.verb
        if self.name is None:
            return {"GET": "list", "POST": "insert"}.get(self.http_method, "?")
        return {"GET": "get", "DELETE": "delete", "PATCH": "patch",
                "PUT": "update"}.get(self.http_method, "?")

    @property
    def api_collection(self) -> str:
        return api_collection(self.scope_kind, self.collection)


def handle(world, route: Route, params: dict, body: dict) -> dict:
    method = route.api_method
    if method in MUTATING and params.get("requestId"):
        _check_request_id(params["requestId"])
        seen = world.operations.by_request_id.get(params["requestId"])
        if seen is not None:
            return copy.deepcopy(seen.body)   # the original operation; nothing runs twice
    if route.collection == "operations":
        return _operations(world, route, params)
    if route.name is not None and not _PATH_NAME.match(route.name):
        raise errors.ApiError(400, "invalidParameter", f"Invalid value '{route.name}'. Values "
                              f"must match the following regular expression: "
                              f"'{_PATH_PATTERN}'")
    kind = KINDS.get(route.collection)
    if kind is None or route.scope_kind not in kind.scopes:
        raise errors.unsupported(route.http_method, f"{route.scope}/{route.collection}")
    handler = _METHODS.get(method)
    if handler is None:
        raise errors.unsupported(route.http_method,
                                 f"{route.scope}/{route.collection}/{route.name}/{method}")
    return handler(world, kind, route, params, body)


def _check_request_id(value: str) -> None:
    """"The request ID must be a valid UUID with the exception that zero UUID is not
    supported (00000000-0000-0000-0000-000000000000)." (every mutating method's docs)"""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.int == 0:
        raise invalid("requestId", value, "The request ID must be a valid UUID with the "
                      "exception that zero UUID is not supported.")


# -- reads ----------------------------------------------------------------------------------------

def render(world, kind: Kind, res: Resource) -> dict:
    body = copy.deepcopy(res.body)
    if kind.render is not None:
        kind.render(world, res, body)
    return body


def _after_read(world, res: Resource) -> None:
    if res.collection == "instanceGroupManagers":
        groups.advance(world, res)


def get(world, kind, route, params, body) -> dict:
    res = world.require(route.scope, route.collection, route.name)
    out = render(world, kind, res)
    _after_read(world, res)
    return out


def list_(world, kind, route, params, body) -> dict:
    found = world.in_scope(route.scope, route.collection)
    items, token = page([render(world, kind, res) for res in found], params)
    names = {item["name"] for item in items}
    for res in found:
        if res.ref.name in names:
            _after_read(world, res)
    return _list_body(world, kind.list_kind(route.scope_kind), route, items, token)


def _list_body(world, list_kind: str, route: Route, items: list, token: str) -> dict:
    where = f"projects/{world.project}/{route.scope}/{route.collection}"
    out = {"kind": list_kind, "id": where, "selfLink": API + where}
    if items:
        out["items"] = items
    if token:
        out["nextPageToken"] = token
    return out


# -- insert and delete --------------------------------------------------------------------------

def insert(world, kind, route, params, body) -> dict:
    if not isinstance(body, dict) or not body:
        raise errors.required("resource")
    name = check_name(body.get("name"))
    body = {k: v for k, v in copy.deepcopy(body).items()
            if k not in _OUTPUT_ONLY + ("fingerprint",)}
    path = world.path(route.scope, kind.collection, name)
    if path in world.resources:
        raise errors.already_exists(path)
    refs.resolve(world, kind.collection, route.scope, body)
    res = world.new_resource(route.scope, kind.collection, name, body, kind.kind)
    if kind.build is not None:
        kind.build(world, res, params)
    if kind.labels and "labelFingerprint" not in res.body:
        set_labels(res.body, {})
    world.add(res)
    failure = world.take_failure(route.api_collection) or world.take_failure(kind.collection)

    def effect():
        res.state = "ready"
        if kind.ready is not None:
            kind.ready(world, res)

    def undo():
        world.drop(res)
        if kind.undo is not None:
            kind.undo(world, res)

    return world.operate(res, "insert", effect, request_id=params.get("requestId"), undo=undo,
                         failure=failure)


def delete(world, kind, route, params, body) -> dict:
    res = world.require_idle(route.scope, route.collection, route.name)
    owner = world.visible(res.owner) if res.owner else None
    if owner is not None and kind.collection == "instanceGroups":
        raise errors.in_use(kind.noun, res.path, owner.path)
    users = [r for r in world.referrers(res.path) if r.owner != res.path]
    if users:
        raise errors.in_use(kind.noun, res.path, users[0].path)
    if kind.check_delete is not None:
        kind.check_delete(world, res)
    status = res.body.get("status")
    res.state = "deleting"
    if kind.collection == "instances":
        res.body["status"] = "STOPPING"

    def effect():
        world.drop(res)
        if kind.removed is not None:
            kind.removed(world, res)

    def undo():
        res.state = "ready"
        if status is not None:
            res.body["status"] = status

    return world.operate(res, "delete", effect, request_id=params.get("requestId"), undo=undo)


# -- changes --------------------------------------------------------------------------------------

def _change(world, res, op_type: str, new_body: dict, params: dict, after=None) -> dict:
    def effect():
        res.body = new_body
        if after is not None:
            after(world, res)
    return world.operate(res, op_type, effect, request_id=params.get("requestId"))


def patch(world, kind, route, params, body, *, replace: bool = False) -> dict:
    if not (kind.update if replace else kind.patch):
        raise errors.unsupported(route.http_method, f"{route.scope}/{route.collection}")
    res = world.require_idle(route.scope, route.collection, route.name)
    if body.get("name", res.ref.name) != res.ref.name:
        raise invalid("resource.name", body["name"], "The name of a resource cannot be changed.")
    given = body.get("fingerprint")
    if kind.fingerprint == "required" or (kind.fingerprint == "optional" and given is not None):
        check_fingerprint(given, res.body.get("fingerprint"))
    changes = {k: v for k, v in body.items() if k not in _OUTPUT_ONLY + ("fingerprint",)}
    new = dict(changes) if replace else merge_patch(copy.deepcopy(res.body), changes)
    for key in _KEEP_ON_UPDATE:
        if key in res.body:
            new[key] = copy.deepcopy(res.body[key])
    new["name"] = res.ref.name
    refs.resolve(world, kind.collection, route.scope, new)
    trial = Resource(res.ref, new, "ready", res.owner, None, {**res.extra, "before": res.body})
    if kind.rebuild is not None:
        kind.rebuild(world, trial, changes)
    elif kind.build is not None:
        kind.build(world, trial, params)
    if "fingerprint" in res.body:
        refresh_fingerprint(new)
    return _change(world, res, "update" if replace else "patch", new, params, kind.patched)


def update(world, kind, route, params, body) -> dict:
    return patch(world, kind, route, params, body, replace=True)


def set_labels_(world, kind, route, params, body) -> dict:
    if not kind.labels:
        raise errors.unsupported("POST", f"{route.collection}/setLabels")
    res = world.require_idle(route.scope, route.collection, route.name)
    check_fingerprint(body.get("labelFingerprint"), res.body.get("labelFingerprint"),
                      labels=True)
    labels = check_labels(body.get("labels"), "labels")
    new = copy.deepcopy(res.body)
    set_labels(new, labels)
    if "fingerprint" in new:
        new["fingerprint"] = fingerprint({**new, "fingerprint": None})
    return _change(world, res, "setLabels", new, params)


def set_target(world, kind, route, params, body) -> dict:
    if kind.collection != "forwardingRules":
        raise errors.unsupported("POST", f"{route.collection}/setTarget")
    res = world.require_idle(route.scope, route.collection, route.name)
    require(body, ("target",), "targetReference")
    new = copy.deepcopy(res.body)
    new["target"] = body["target"]
    refs.resolve(world, kind.collection, route.scope, new)
    kind.rebuild(world, Resource(res.ref, new, "ready"), {"target": body["target"]})
    return _change(world, res, "setTarget", new, params)


def set_url_map(world, kind, route, params, body) -> dict:
    if kind.collection != "targetHttpProxies":
        raise errors.unsupported("POST", f"{route.collection}/setUrlMap")
    res = world.require_idle(route.scope, route.collection, route.name)
    require(body, ("urlMap",), "urlMapReference")
    new = copy.deepcopy(res.body)
    new["urlMap"] = body["urlMap"]
    refs.resolve(world, kind.collection, route.scope, new)
    refresh_fingerprint(new)
    return _change(world, res, "setUrlMap", new, params)


# -- instance groups ------------------------------------------------------------------------------

def resize(world, kind, route, params, body) -> dict:
    if kind.collection != "instanceGroupManagers":
        raise errors.unsupported("POST", f"{route.collection}/resize")
    res = world.require_idle(route.scope, route.collection, route.name)
    effect = groups.resize(world, res, params)
    return world.operate(res, "compute.instanceGroupManagers.resize", effect,
                         request_id=params.get("requestId"))


def list_managed_instances(world, kind, route, params, body) -> dict:
    if kind.collection != "instanceGroupManagers":
        raise errors.unsupported("POST", f"{route.collection}/listManagedInstances")
    res = world.require(route.scope, route.collection, route.name)
    return groups.list_managed(world, res, params)


def set_named_ports(world, kind, route, params, body) -> dict:
    if kind.collection != "instanceGroups":
        raise errors.unsupported("POST", f"{route.collection}/setNamedPorts")
    res = world.require_idle(route.scope, route.collection, route.name)
    effect = groups.set_named_ports(world, res, body)
    return world.operate(res, "compute.instanceGroups.setNamedPorts", effect,
                         request_id=params.get("requestId"))


def add_instances(world, kind, route, params, body, *, remove: bool = False) -> dict:
    verb = "removeInstances" if remove else "addInstances"
    if kind.collection != "instanceGroups" or route.scope_kind != "zones":
        raise errors.unsupported("POST", f"{route.scope}/{route.collection}/{verb}")
    res = world.require_idle(route.scope, route.collection, route.name)
    change = unmanaged.remove_instances if remove else unmanaged.add_instances
    effect = change(world, res, body)
    return world.operate(res, f"compute.instanceGroups.{verb}", effect,
                         request_id=params.get("requestId"))


def remove_instances(world, kind, route, params, body) -> dict:
    return add_instances(world, kind, route, params, body, remove=True)


def list_instances(world, kind, route, params, body) -> dict:
    if kind.collection != "instanceGroups":
        raise errors.unsupported("POST", f"{route.collection}/listInstances")
    res = world.require(route.scope, route.collection, route.name)
    return groups.list_group_instances(world, res, params, body)


_METHODS = {"get": get, "list": list_, "insert": insert, "delete": delete, "patch": patch,
            "update": update, "setLabels": set_labels_, "setTarget": set_target,
            "setUrlMap": set_url_map, "resize": resize,
            "listManagedInstances": list_managed_instances, "setNamedPorts": set_named_ports,
            "listInstances": list_instances, "addInstances": add_instances,
            "removeInstances": remove_instances}


# -- operations -----------------------------------------------------------------------------------

def _operations(world, route: Route, params: dict) -> dict:
    ops = world.operations
    method = route.api_method
    if method in ("get", "wait"):
        return copy.deepcopy(ops.poll(route.scope, route.name))
    if method == "delete":
        ops.delete(route.scope, route.name)
        return {}
    if method == "list":
        items, token = page(copy.deepcopy(ops.in_scope(route.scope)), params)
        return _list_body(world, "compute#operationList", route, items, token)
    raise errors.unsupported(route.http_method, f"{route.scope}/operations")

"""The plan in Terraform's JSON plan shape (``terraform show -json``), so pipeline tooling that
reads ``resource_changes[].change.actions`` reads ours unchanged.
https://developer.hashicorp.com/terraform/internals/json-format
"""

from __future__ import annotations

import re
from typing import Any

from provisioner import __version__
from provisioner.plan import Plan, ResourceChange
from provisioner.values import SENSITIVE_PREFIX, flatten

FORMAT_VERSION = "1.2"
_NAME_INDEX = re.compile(r"^[^.]+\.([^\[]+)(?:\[(.+)\])?$")


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "provisioner_version": __version__,
        "lineage": plan.lineage,
        "serial": plan.serial,
        "destroy": plan.destroy,
        "variables": {name: {"value": _mask(value)} for name, value in plan.variables.items()},
        "resource_changes": [_change(c) for c in plan.changes],
        "resource_drift": [
            {
                "address": d.address,
                "type": d.type,
                "change": {
                    "actions": ["delete"] if d.kind == "deleted" else ["update"],
                    "before": d.before,
                    "after": d.after,
                },
            }
            for d in plan.drift
        ],
        "output_changes": {
            name: {"actions": ["create"], "after": _mask(value)} for name, value in plan.outputs.items()
        },
        "errored": False,
    }


def _change(change: ResourceChange) -> dict[str, Any]:
    match = _NAME_INDEX.match(change.address)
    item: dict[str, Any] = {
        "address": change.address,
        "mode": "managed",
        "type": change.type,
        "name": match.group(1) if match else change.address,
        "provider_name": change.type.split("_", 1)[0],
        "change": {
            "actions": change.terraform_actions,
            "before": _mask(change.before),
            "after": _mask(change.after),
            "after_unknown": _nested_true(change.after_unknown),
            "before_sensitive": _sensitive_paths(change.before),
            "after_sensitive": _sensitive_paths(change.after),
            "replace_paths": [p.split(".") for p in change.replace_paths],
        },
    }
    if match and match.group(2) is not None:
        index = match.group(2)
        item["index"] = int(index) if index.isdigit() else index.strip('"')
    if change.reason:
        item["action_reason"] = change.reason
    return item


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str) and value.startswith(SENSITIVE_PREFIX):
        return None
    return value


def _nested_true(paths: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in paths:
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = True
    return out


def _sensitive_paths(value: dict[str, Any] | None) -> dict[str, Any]:
    if not value:
        return {}
    return _nested_true([p for p, v in flatten(value).items()
                         if isinstance(v, str) and v.startswith(SENSITIVE_PREFIX)])

"""Values in attributes: dotted paths, and secrets replaced by their digests.

Every path that writes a record (state, plan, checkpoint, event) redacts through here; a
sensitive value is kept only as ``sensitive:sha256:<hex>``, enough to notice that it changed.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

SENSITIVE_PREFIX = "sensitive:sha256:"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted paths; lists and scalars are leaves; {} stays a leaf."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def redact(value: Any, secrets: list[str]) -> tuple[Any, list[str]]:
    """Replace every string that contains a secret by its digest; report the paths."""
    found: list[str] = []
    if not secrets:
        return value, found

    def walk(item: Any, path: str) -> Any:
        if isinstance(item, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(item)]
        if isinstance(item, str) and any(s and s in item for s in secrets):
            found.append(path)
            return sensitive_digest(item)
        return item

    return walk(value, ""), found


def redact_paths(value: dict[str, Any], paths: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Digest the strings at these dotted paths (live reads give real values; state keeps
    digests)."""
    out = copy.deepcopy(value)
    for path in paths:
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str):
            node[leaf] = sensitive_digest(node[leaf])
    return out, paths


def sensitive_digest(text: str) -> str:
    if text.startswith(SENSITIVE_PREFIX):
        return text
    return SENSITIVE_PREFIX + hashlib.sha256(text.encode()).hexdigest()

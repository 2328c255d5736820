"""``${var.NAME}`` substitution in the string values of a spec.

A string that is exactly one reference becomes the variable's typed value (a number stays a
number, so ``dashboard_port: ${var.port}`` validates as an integer); a reference inside a longer
string is formatted into it. Any other ``${...}`` (resource references such as
``${local_ray_head.head.dashboard_url}``) is left as written for the graph to resolve later.
Mapping keys are never substituted.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from provisioner.errors import SpecError
from provisioner.spec.problems import did_you_mean, format_path

_REF = re.compile(r"\$\{\s*var\.([^}]*?)\s*\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Parts = tuple[str | int, ...]


@dataclass
class Interpolation:
    """The substituted data and the paths that received a sensitive value."""

    data: Any
    sensitive_paths: set[Parts] = field(default_factory=set)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def interpolate(
    data: Any,
    values: Mapping[str, Any],
    *,
    source: str,
    sensitive: set[str] | frozenset[str] = frozenset(),
    skip: frozenset[str] = frozenset({"variables"}),
) -> Interpolation:
    """Substitute ``${var.NAME}`` throughout ``data`` (a spec document), except top-level ``skip``."""
    result = Interpolation(data=None)

    def lookup(name: str, path: Parts) -> Any:
        if not _NAME.match(name):
            raise SpecError(
                f"unsupported reference '${{var.{name}}}': only ${{var.NAME}} is supported",
                source=source,
                path=format_path(path) or None,
            )
        if name not in values:
            declared = ", ".join(sorted(values)) or "(none)"
            message = f"unknown variable {name!r} in '${{var.{name}}}'; declared: {declared}"
            guess = did_you_mean(name, values)
            if guess:
                message += f"; did you mean {guess!r}?"
            raise SpecError(
                message,
                source=source,
                path=format_path(path) or None,
                hint="declare it under 'variables:'",
            )
        if name in sensitive:
            result.sensitive_paths.add(path)
        return values[name]

    def walk(node: Any, path: Parts) -> Any:
        if isinstance(node, dict):
            return {
                key: value if (not path and key in skip) else walk(value, (*path, key))
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [walk(item, (*path, i)) for i, item in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            whole = _REF.fullmatch(node)
            if whole:
                return copy.deepcopy(lookup(whole.group(1), path))
            return _REF.sub(lambda m: _as_text(lookup(m.group(1), path)), node)
        return node

    result.data = walk(data, ())
    return result

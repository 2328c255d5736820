"""The JSON Schema of ``cluster.yaml``, for editors (YAML language servers) and linters.

The spec is a union discriminated on ``provider``: each registered provider contributes its
``Spec`` subclass, whose ``cluster`` is that provider's settings. Outside ``variables``, any
number or boolean may also be written as a whole ``${var.NAME}`` reference, so those places
accept such a string too.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from provisioner.spec.models import spec_model
from provisioner.spec.providers import PROVIDERS

DIALECT = "https://json-schema.org/draft/2020-12/schema"
VAR_REFERENCE = r"^\$\{\s*var\.[A-Za-z_][A-Za-z0-9_]*\s*\}$"
_NO_REFERENCES = {"VariableDecl", "VariableValidation"}  # `variables:` is not substituted


def _allow_references(node: Any) -> Any:
    if isinstance(node, list):
        return [_allow_references(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _allow_references(value) for key, value in node.items()}
    if out.get("type") in ("integer", "number", "boolean"):
        keep = {k: v for k, v in out.items() if k in ("title", "description", "default")}
        rest = {k: v for k, v in out.items() if k not in keep}
        return {**keep, "anyOf": [rest, {"type": "string", "pattern": VAR_REFERENCE}]}
    return out


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the whole spec."""
    models = tuple(spec_model(name) for name in sorted(PROVIDERS))
    union: Any = models[0] if len(models) == 1 else Annotated[Union[models], Field(discriminator="provider")]
    schema = TypeAdapter(union).json_schema()
    defs = schema.get("$defs", {})
    for name, definition in list(defs.items()):
        if name not in _NO_REFERENCES:
            defs[name] = _allow_references(definition)
    return {
        "$schema": DIALECT,
        "title": "provisioner cluster.yaml",
        **schema,
    }

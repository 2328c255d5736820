"""Desired resources and the references between them.

A module expands the spec into :class:`Resource` s. Attribute values may hold references to other
resources' attributes, written ``${type.name.attr}`` or ``${type.name[0].attr}``; these make the
edges of the graph and are resolved at apply time, once the referenced resource exists.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ConfigDict, Field

ADDRESS_PATTERN = r"[a-z][a-z0-9_]*\.[A-Za-z0-9_-]+(?:\[(?:\d+|\"[^\"]+\")\])?"
_ADDRESS = re.compile(rf"^{ADDRESS_PATTERN}$")
_REFERENCE = re.compile(rf"\$\{{({ADDRESS_PATTERN})\.([A-Za-z0-9_.]+)\}}")

UNKNOWN = "(known after apply)"


class Resource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    type: str
    attributes: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    create_before_destroy: bool = False

    def references(self) -> set[str]:
        """Addresses this resource refers to, through attributes and ``depends_on``."""
        found = {address for _, address, _ in reference_paths(self.attributes)}
        return found | set(self.depends_on)


def is_address(text: str) -> bool:
    return bool(_ADDRESS.match(text))


def type_of(address: str) -> str:
    return address.split(".", 1)[0]


def reference_paths(value: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """Yield (attribute path, referenced address, referenced attribute) for ``value``."""
    if isinstance(value, str):
        for match in _REFERENCE.finditer(value):
            yield path, match.group(1), match.group(2)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from reference_paths(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from reference_paths(item, f"{path}[{index}]")


class Unresolved(Exception):
    """A reference points at a value not known yet (the resource is still to be created)."""


def resolve(value: Any, lookup: Callable[[str, str], Any]) -> Any:
    """Replace references in ``value`` using ``lookup(address, attribute)``.

    A string that is exactly one reference takes the referenced value's type; references inside
    longer strings are formatted in. ``lookup`` raises :class:`Unresolved` for unknown values.
    """
    if isinstance(value, str):
        whole = _REFERENCE.fullmatch(value)
        if whole:
            return lookup(whole.group(1), whole.group(2))
        return _REFERENCE.sub(lambda m: str(lookup(m.group(1), m.group(2))), value)
    if isinstance(value, dict):
        return {key: resolve(item, lookup) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, lookup) for item in value]
    return value


def resolve_partially(value: Any, lookup: Callable[[str, str], Any]) -> tuple[Any, set[str]]:
    """Like :func:`resolve`, but leaves unknown values as ``UNKNOWN`` and reports their paths."""
    unknown: set[str] = set()

    def walk(item: Any, path: str) -> Any:
        if isinstance(item, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(item)]
        if isinstance(item, str) and "${" in item:
            try:
                return resolve(item, lookup)
            except Unresolved:
                unknown.add(path)
                return UNKNOWN
        return item

    return walk(value, ""), unknown


def get_path(data: dict[str, Any], dotted: str) -> Any:
    """``a.b.c`` inside nested dicts; KeyError when absent."""
    current: Any = data
    for part in dotted.split("."):
        if not isinstance(current, dict) or part not in current:
            raise KeyError(dotted)
        current = current[part]
    return current

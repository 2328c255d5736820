"""The resource graph: edges from references, checked before anything runs.

Unknown references and cycles are :class:`~provisioner.errors.GraphError` s naming the resource
and the attribute that refers. Order is deterministic (ties broken by address) so plans and
renderings are stable.
"""

from __future__ import annotations

import graphlib
from typing import Iterable, Mapping

from provisioner.errors import GraphError
from provisioner.resources import Resource, reference_paths


class ResourceGraph:
    """``dependencies[a]`` = the addresses ``a`` refers to."""

    def __init__(self, dependencies: Mapping[str, Iterable[str]]) -> None:
        self.dependencies = {a: set(deps) for a, deps in dependencies.items()}
        self.dependents: dict[str, set[str]] = {a: set() for a in self.dependencies}
        for address, deps in self.dependencies.items():
            for dep in deps:
                self.dependents.setdefault(dep, set()).add(address)

    @classmethod
    def from_resources(cls, resources: Iterable[Resource], *, source: str) -> "ResourceGraph":
        by_address = {r.address: r for r in resources}
        for resource in by_address.values():
            _check_references(resource, by_address, source)
        graph = cls({a: r.references() for a, r in by_address.items()})
        graph.order()  # raises on cycles
        return graph

    def order(self) -> list[str]:
        """Dependencies first; ties by address."""
        sorter = graphlib.TopologicalSorter(self.dependencies)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            raise GraphError(
                "dependency cycle: " + " -> ".join(cycle),
                hint="break the cycle by removing one of these references",
            ) from None
        result: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            result.extend(ready)
            sorter.done(*ready)
        return result

    def transitive_dependents(self, address: str) -> set[str]:
        seen: set[str] = set()
        stack = [address]
        while stack:
            for dependent in self.dependents.get(stack.pop(), ()):
                if dependent not in seen:
                    seen.add(dependent)
                    stack.append(dependent)
        return seen

    def transitive_dependencies(self, address: str) -> set[str]:
        seen: set[str] = set()
        stack = [address]
        while stack:
            for dep in self.dependencies.get(stack.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return seen


def _check_references(resource: Resource, known: Mapping[str, Resource], source: str) -> None:
    check_references(resource.attributes, known, source=source, where=resource.address)
    for address in resource.depends_on:
        if address not in known:
            raise GraphError(
                f"depends_on names unknown resource {address}",
                source=source,
                path=f"{resource.address}.depends_on",
                hint=_closest(address, known),
            )


def check_references(value, known: Mapping[str, object], *, source: str, where: str) -> None:
    """Every ``${address.attr}`` inside ``value`` must name a known resource."""
    for path, address, attribute in reference_paths(value):
        if address not in known:
            raise GraphError(
                f"reference to unknown resource {address} (in ${{{address}.{attribute}}})",
                source=source,
                path=f"{where}.{path}" if path else where,
                hint=_closest(address, known),
            )


def _closest(address: str, known: Mapping[str, object]) -> str | None:
    import difflib

    match = difflib.get_close_matches(address, list(known), n=1)
    return f"did you mean {match[0]}?" if match else None

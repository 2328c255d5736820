"""The ``cluster:`` section of each provider, and the registry that ties ``provider:`` to it.

Adding a provider (ssh, aws, gcp) is one settings model here plus one :func:`register` call;
the loader, the JSON Schema and the error messages pick it up from the registry. This module is
only the *shape* of the settings; what a provider does with them lives in
``provisioner.providers``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any, Iterator

from pydantic import Field, ValidationError, field_validator

from provisioner.spec.base import Problem, SpecModel, expected

Port = Annotated[int, Field(ge=1, le=65535)]


class LocalSettings(SpecModel):
    """A Ray cluster of one head node on this machine (``ray start --head``)."""

    gcs_port: Port = Field(6379, description="Ray GCS port (ray start --port).")
    dashboard_port: Port = Field(8265, description="Ray dashboard and REST API port.")
    client_server_port: Port = Field(10001, description="Ray Client server port.")
    dashboard_agent_port: Port = Field(52365, description="Dashboard agent HTTP port.")
    num_cpus: Annotated[int, Field(ge=0)] | None = Field(
        None, description="CPUs Ray may use; default: all of them."
    )
    node_ip: str = Field("127.0.0.1", description="IP address the node advertises.")

    @field_validator("node_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise expected("an IP address") from None
        return value

    def problems(self) -> Iterator[Problem]:
        seen: dict[int, str] = {}
        for name in ("gcs_port", "dashboard_port", "client_server_port", "dashboard_agent_port"):
            port = getattr(self, name)
            if port in seen:
                yield (name,), f"port {port} is already used by {seen[port]}"
            seen[port] = name


class MemoryGroup(SpecModel):
    """A group of in-memory resources (one, or ``count`` of them)."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    count: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Number of resources; null makes a single resource."
    )
    attributes: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list, description="Names of other groups.")
    fail: str | None = Field(None, description="Inject a failure (for engine tests).")
    delay_s: Annotated[float, Field(ge=0)] = Field(0, description="Delay of each provider call.")


class MemorySettings(SpecModel):
    """Resources that exist only in a file: for engine tests and benchmarks, no machines."""

    resources: list[MemoryGroup] = Field(default_factory=list)

    def problems(self) -> Iterator[Problem]:
        names: dict[str, int] = {}
        for i, group in enumerate(self.resources):
            if group.name in names:
                yield ("resources", i, "name"), (
                    f"group name {group.name!r} is already used by resources[{names[group.name]}]"
                )
            names.setdefault(group.name, i)
        for i, group in enumerate(self.resources):
            for j, dep in enumerate(group.depends_on):
                if dep == group.name:
                    yield ("resources", i, "depends_on", j), "a group cannot depend on itself"
                elif dep not in names:
                    known = ", ".join(sorted(names)) or "(none)"
                    yield ("resources", i, "depends_on", j), (
                        f"unknown group {dep!r}; groups: {known}"
                    )
        cycle = _find_cycle({g.name: [d for d in g.depends_on if d in names] for g in self.resources})
        if cycle:
            i = names[cycle[0]]
            yield ("resources", i, "depends_on"), "dependency cycle: " + " -> ".join(cycle)


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle in ``edges`` as a closed list of names, or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@dataclass(frozen=True)
class ProviderInfo:
    """A provider as the spec knows it: its name and the model of its ``cluster:`` section."""

    name: str
    settings: type[SpecModel]
    description: str

    @property
    def cluster_required(self) -> bool:
        """Whether ``cluster:`` must be written (some setting has no default)."""
        try:
            self.settings()
        except ValidationError:
            return True
        return False


PROVIDERS: dict[str, ProviderInfo] = {}


def register(name: str, settings: type[SpecModel], description: str) -> None:
    """Make ``provider: <name>`` valid, with ``settings`` as its ``cluster:`` model."""
    PROVIDERS[name] = ProviderInfo(name, settings, description)


register("local", LocalSettings, "A single-node Ray cluster on this machine.")
register("memory", MemorySettings, "In-memory resources for engine tests and benchmarks.")

"""The ``cluster:`` section of each provider, and the registry that ties ``provider:`` to it.

Adding a provider (ssh, aws, gcp) is one settings model here plus one :func:`register` call;
the loader, the JSON Schema and the error messages pick it up from the registry. This module is
only the *shape* of the settings; what a provider does with them lives in
``provisioner.providers``.
"""

from __future__ import annotations

import graphlib
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
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


HostName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")]


class SshHost(SpecModel):
    """A machine reached over SSH. Unset fields fall back to the cluster-wide defaults."""

    name: HostName = Field(description="Short name; the host's resources are named after it.")
    address: str = Field(description="IP address or DNS name the CLI connects to.")
    port: Port = 22
    user: str | None = Field(None, description="SSH user; default: cluster.user.")
    key_file: str | None = Field(None, description="Private key; default: cluster.key_file.")
    alias: str | None = Field(None, description="A Host alias of ~/.ssh/config to use instead.")
    host_key: str | None = Field(
        None, description="Pinned host key '<type> <base64>'; default: recorded at first contact."
    )


class SshRay(SpecModel):
    """How Ray runs on the hosts."""

    python: str = Field("python3", description="Python on the hosts that has (or gets) Ray.")
    install: bool = Field(False, description="pip install ray[serve] on hosts that lack it.")
    version: str | None = Field(None, description="Ray version to install; default: ours.")
    gcs_port: Port = Field(6379, description="Head's GCS port.")
    dashboard_port: Port = Field(8265, description="Head's dashboard port (reached by tunnel).")
    num_cpus: Annotated[int, Field(ge=0)] | None = Field(None, description="CPUs per node.")


class SshLoadBalancer(SpecModel):
    """HAProxy on the load balancer host, in front of every node's Serve proxy."""

    listen_port: Port = Field(8080, description="Port clients connect to.")
    install: bool = Field(True, description="apt-get install haproxy when it is missing.")


class SshSettings(SpecModel):
    """A Ray cluster on machines reached over SSH: one head, workers, a load balancer."""

    hosts: list[SshHost] = Field(min_length=1, description="All machines of the cluster.")
    head: HostName = Field(description="Name of the head host.")
    load_balancer: HostName | None = Field(None, description="Name of the HAProxy host.")
    standby: list[HostName] = Field(
        default_factory=list, description="Hosts kept in reserve to replace a lost head."
    )
    user: str = Field("root", description="Default SSH user.")
    key_file: str | None = Field(None, description="Default private key file.")
    known_hosts: str | None = Field(None, description="known_hosts file whose keys are trusted.")
    node_dir: str = Field("/var/lib/provisioner", description="Directory of our files on hosts.")
    ray: SshRay = Field(default_factory=SshRay)
    lb: SshLoadBalancer = Field(default_factory=SshLoadBalancer)

    def workers(self) -> list[SshHost]:
        roles = {self.head, self.load_balancer, *self.standby}
        return [host for host in self.hosts if host.name not in roles]

    def problems(self) -> Iterator[Problem]:
        names: dict[str, int] = {}
        for i, host in enumerate(self.hosts):
            if host.name in names:
                yield ("hosts", i, "name"), f"host name {host.name!r} is used twice"
            names.setdefault(host.name, i)
        known = ", ".join(names) or "(none)"
        if self.head not in names:
            yield ("head",), f"no host named {self.head!r}; hosts: {known}"
        if self.load_balancer is not None and self.load_balancer not in names:
            yield ("load_balancer",), f"no host named {self.load_balancer!r}; hosts: {known}"
        if self.load_balancer == self.head:
            yield ("load_balancer",), "the load balancer needs a host of its own, not the head"
        for i, name in enumerate(self.standby):
            if name not in names or name in (self.head, self.load_balancer):
                yield ("standby", i), f"{name!r} must name a host that is not head or LB"


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
register("ssh", SshSettings, "Ray on machines reached over SSH, with HAProxy in front.")

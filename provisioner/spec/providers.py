"""The ``cluster:`` section of each provider, and the registry that ties ``provider:`` to it.

Adding a provider (ssh, aws, gcp) is one settings model here plus one :func:`register` call;
the loader, the JSON Schema and the error messages pick it up from the registry. This module is
only the *shape* of the settings; what a provider does with them lives in
``provisioner.providers``.
"""

from __future__ import annotations

import graphlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any, Iterator, Literal

from pydantic import AfterValidator, Field, ValidationError

from provisioner.spec.base import Problem, SpecModel, expected

Port = Annotated[int, Field(ge=1, le=65535)]


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise expected("an IP address") from None
    return value


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise expected("a CIDR block like 203.0.113.0/24") from None
    return value


def _bucket_uri(scheme: str):
    def check(value: str) -> str:
        if not re.match(rf"^{scheme}://[^/]+", value):
            raise expected(f"{scheme}://bucket/prefix")
        return value

    return AfterValidator(check)


IpAddress = Annotated[str, AfterValidator(_ip_address)]
Cidr = Annotated[str, AfterValidator(_cidr)]
# Checked as a whole (an error names the list, not the item), like the other list settings.
CidrList = Annotated[list[str], AfterValidator(lambda values: [_cidr(v) for v in values])]
S3Uri = Annotated[str, _bucket_uri("s3")]
GsUri = Annotated[str, _bucket_uri("gs")]


class LocalSettings(SpecModel):
    """A Ray cluster of one head node on this machine (``ray start --head``)."""

    gcs_port: Port = Field(6379, description="Ray GCS port (ray start --port).")
    dashboard_port: Port = Field(8265, description="Ray dashboard and REST API port.")
    client_server_port: Port = Field(10001, description="Ray Client server port.")
    dashboard_agent_port: Port = Field(52365, description="Dashboard agent HTTP port.")
    num_cpus: Annotated[int, Field(ge=0)] | None = Field(
        None, description="CPUs Ray may use; default: all of them."
    )
    node_ip: IpAddress = Field("127.0.0.1", description="IP address the node advertises.")

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


def package_store_problems(package_store: str | None, serve: Any, scheme: str,
                           service: str) -> Iterator[Problem]:
    """A cloud cluster's Serve code reaches its nodes through an object store: the cluster's
    package store, else the checkpoint store if it is one."""
    if package_store is None and not str(serve.checkpoint_store or "").startswith(f"{scheme}://"):
        yield ("package_store",), (
            f"Serve code must reach the nodes through {service}: set cluster.package_store (or "
            f"serve.checkpoint_store) to a {scheme}://bucket/prefix URI")


class CloudRay(SpecModel):
    """How Ray runs on cloud nodes (installed at first boot when the image lacks it)."""

    python: str = Field("python3", description="Python on the image that has (or gets) Ray.")
    install: bool = Field(True, description="pip install ray[serve] at first boot if missing.")
    version: str | None = Field(None, description="Ray version to install; default: ours.")
    gcs_port: Port = Field(6379, description="Head's GCS port.")
    dashboard_port: Port = Field(8265, description="Head's dashboard port.")
    num_cpus: Annotated[int, Field(ge=0)] | None = Field(None, description="CPUs per node.")


class AwsHead(SpecModel):
    """The head: one instance on a network interface that outlives it (its address is kept
    when recover replaces the instance)."""

    instance_type: str | None = Field(None, description="Default: cluster.instance_type.")
    subnet: str | None = Field(None, description="Subnet of the head; default: subnets[0].")
    private_ip: IpAddress | None = Field(None, description="Fixed private address; default: EC2 picks "
                                   "one when the interface is made, and it is kept.")


class AwsWorkers(SpecModel):
    """The workers: an Auto Scaling group (health check type EC2, never ELB)."""

    instance_type: str | None = Field(None, description="Default: cluster.instance_type.")
    min_size: Annotated[int, Field(ge=0)] = 1
    max_size: Annotated[int, Field(ge=0)] = 4
    desired_capacity: Annotated[int, Field(ge=0)] = 2


class AwsLoadBalancer(SpecModel):
    """An ALB (default) or NLB in front of every node's Serve proxy."""

    type: Literal["application", "network"] = Field("application", description="ALB or NLB.")
    listen_port: Port = Field(80, description="Port clients connect to.")
    allowed_cidrs: CidrList = Field(default_factory=lambda: ["0.0.0.0/0"],
                                     description="Who may connect to the load balancer (ALB).")
    idle_timeout_s: Annotated[int, Field(ge=1, le=4000)] = Field(
        60, description="ALB idle timeout; Serve's keep-alive is set above it.")
    deregistration_delay_s: Annotated[int, Field(ge=0, le=3600)] = Field(
        30, description="How long a leaving node keeps its open requests.")
    include_head: bool = Field(True, description="Register the head's proxy as a target too.")


class AwsSettings(SpecModel):
    """A Ray cluster on EC2: the head on one instance, workers in an Auto Scaling group, an ALB
    or NLB in front. The VPC and subnets are yours; everything else provisioner makes."""

    region: str = Field(description="AWS region, e.g. us-east-1.")
    vpc_id: str = Field(description="The VPC of the cluster.")
    subnets: list[str] = Field(min_length=1, description="Subnets across availability zones "
                               "(an ALB needs two zones at least).")
    image_id: str = Field(description="AMI of every node (Ubuntu or Amazon Linux with systemd).")
    instance_type: str = Field("m5.xlarge", description="Default instance type.")
    key_name: str | None = Field(None, description="EC2 key pair for SSH; default: none.")
    iam_instance_profile: str | None = Field(None, description="Instance profile of the nodes.")
    operator_cidr: Cidr = Field(description="Who may reach SSH and the Ray dashboard (the "
                               "machine running provisioner must be inside).")
    node_dir: str = Field("/var/lib/provisioner", description="Directory of our files on nodes.")
    package_store: S3Uri | None = Field(
        None, description="s3://bucket/prefix where Serve code packages go for the nodes to "
        "fetch (the nodes' instance profile must read it); default: serve.checkpoint_store "
        "when it is on S3.")
    head: AwsHead = Field(default_factory=AwsHead)
    workers: AwsWorkers = Field(default_factory=AwsWorkers)
    lb: AwsLoadBalancer = Field(default_factory=AwsLoadBalancer)
    ray: CloudRay = Field(default_factory=CloudRay)

    def serve_problems(self, serve: Any) -> Iterator[Problem]:
        """Problems of this cluster with ``serve`` (the spec's ServeConfig)."""
        return package_store_problems(self.package_store, serve, "s3", "S3")

    def problems(self) -> Iterator[Problem]:
        workers = self.workers
        if not workers.min_size <= workers.desired_capacity <= workers.max_size:
            yield ("workers", "desired_capacity"), (
                f"must be between min_size ({workers.min_size}) and max_size "
                f"({workers.max_size}), not {workers.desired_capacity}")
        if self.lb.type == "application" and len(set(self.subnets)) < 2:
            yield ("subnets",), "an application load balancer needs subnets in two zones at least"
        if self.head.subnet is not None and self.head.subnet not in self.subnets:
            yield ("head", "subnet"), f"{self.head.subnet!r} is not one of subnets"


class GcpHead(SpecModel):
    """The head: one instance at a reserved internal address (kept when recover replaces the
    instance)."""

    machine_type: str | None = Field(None, description="Default: cluster.machine_type.")
    address: IpAddress | None = Field(None, description="Fixed internal address; default: Compute "
                                "picks one when it is reserved, and it is kept.")


class GcpWorkers(SpecModel):
    """The workers: a managed instance group (no autohealing on /-/healthz)."""

    machine_type: str | None = Field(None, description="Default: cluster.machine_type.")
    size: Annotated[int, Field(ge=0)] = Field(2, description="The group's target size.")
    regional: bool = Field(False, description="Spread over the region's zones (a regional "
                           "group) instead of cluster.zone.")


class GcpLoadBalancer(SpecModel):
    """The global external Application LB (default) or a regional passthrough Network LB."""

    type: Literal["http", "network"] = Field("http", description="http: global external "
                                             "Application LB; network: regional passthrough "
                                             "Network LB (clients reach Serve's port).")
    listen_port: Literal[80, 8080] = Field(80, description="http: the port clients connect to.")
    allowed_cidrs: CidrList = Field(default_factory=lambda: ["0.0.0.0/0"],
                                     description="network: who may connect (firewall).")
    timeout_s: Annotated[int, Field(ge=1, le=86400)] = Field(
        300, description="How long a request may take (backend service timeout).")
    include_head: bool = Field(True, description="Send to the head's proxy too.")


class GcpSettings(SpecModel):
    """A Ray cluster on Compute Engine: the head on one instance, workers in a managed
    instance group, a load balancer in front. The network and subnetwork are yours."""

    project: str = Field(description="Google Cloud project id.")
    region: str = Field(description="Region, e.g. us-central1.")
    zone: str = Field(description="Zone of the head (and of a zonal worker group).")
    network: str = Field("default", description="VPC network name.")
    subnetwork: str = Field("default", description="Subnetwork (in the region) name.")
    image: str = Field(description="Boot image, e.g. "
                       "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts.")
    machine_type: str = Field("n2-standard-4", description="Default machine type.")
    operator_cidr: Cidr = Field(description="Who may reach SSH and the Ray dashboard (the "
                               "machine running provisioner must be inside).")
    service_account: str | None = Field(None, description="Nodes' service account email (it "
                                        "must read the package store).")
    public_ips: bool = Field(True, description="Give nodes external addresses (to install "
                             "Ray at first boot); false if the network has Cloud NAT.")
    node_dir: str = Field("/var/lib/provisioner", description="Directory of our files on nodes.")
    package_store: GsUri | None = Field(
        None, description="gs://bucket/prefix where Serve code packages go for the nodes to "
        "fetch; default: serve.checkpoint_store when it is on GCS.")
    head: GcpHead = Field(default_factory=GcpHead)
    workers: GcpWorkers = Field(default_factory=GcpWorkers)
    lb: GcpLoadBalancer = Field(default_factory=GcpLoadBalancer)
    ray: CloudRay = Field(default_factory=CloudRay)

    def serve_problems(self, serve: Any) -> Iterator[Problem]:
        """Problems of this cluster with ``serve`` (the spec's ServeConfig)."""
        return package_store_problems(self.package_store, serve, "gs", "Cloud Storage")

    def problems(self) -> Iterator[Problem]:
        if not self.zone.startswith(self.region + "-"):
            yield ("zone",), f"{self.zone!r} is not a zone of region {self.region!r}"


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
register("gcp", GcpSettings, "Ray on Compute Engine: a managed instance group behind a "
         "Google Cloud load balancer.")
register("aws", AwsSettings, "Ray on EC2: an Auto Scaling group of workers behind an ALB/NLB.")

"""The resource type contract. Every provider (local, memory, ssh, haproxy, serve, aws, gcp)
implements it; implementations say "see provisioner.providers.base" instead of repeating it.

A resource type manages one kind of thing (a Ray head, a Serve application, an Auto Scaling
group). The engine calls it with plain dictionaries of attributes whose references are already
resolved. The contract:

``list(scope)``
    Everything of this type that the owner (``scope.owner``: cluster name + state lineage) has,
    found in *one batched call per type* (by ownership tag, label, name prefix, marker file), never
    one call per resource. ``scope.known`` carries the addresses and attributes the engine already
    knows of (recorded in state or desired) so a type can tell where to look (which dashboard,
    which region). Read-only; must not fail because something is missing.

    Three outcomes for each known resource, never two:

    - *found*: a :class:`LiveResource` carrying its address and the idempotency token it was
      created with;
    - *not there*: absent from the result (the host or API answered, and it is not there);
    - *could not look*: an :class:`Unreadable` naming the address and why (the host did not
      answer on SSH, the dashboard answered 503). When a whole type cannot be looked at (its
      API does not answer), ``list`` raises :class:`~provisioner.errors.ProviderError` instead,
      and every known resource of the type counts as unreadable.

    "Could not look" is never "gone": a plan that meets one stops and names it; only
    ``recover`` goes on, holding such resources as recorded.

``create(address, desired, token)``
    Make the resource; return it as live. ``token`` is the idempotency key already recorded in the
    journal: pass it to the API where it takes one (EC2 ClientToken, GCE requestId) and write it on
    the resource (tag, label, description, marker) so that ``list`` finds an interrupted create by
    token and the engine adopts it instead of making a second one. Creating a resource that exists
    with the same token returns it unchanged.

``update(address, prior, desired)``
    Change the resource in place to ``desired``; only called when no attribute in
    ``force_new`` differs. Must leave untouched what did not change.

``delete(address, prior)``
    Remove the resource. Deleting what is already gone is success.

Errors: raise :class:`~provisioner.errors.ProviderError` (or ``TransientProviderError`` for
throttling, 5xx, resets; the engine's retry policy handles those). Long calls report progress
through ``ctx.progress(address, message)``; nothing here prints.

Class attributes:

``type_name``      the resource type as written in addresses (``local_ray_head``).
``force_new``      attributes whose change forces replacement.
``computed``       attributes known only after apply (ids, addresses, session ids); the desired
                   side never sets them and the diff ignores them.
``ignore_drift``   attributes whose live value is not compared (derived or noisy).
``plan_facts``     attributes a create reads at plan time (``read_facts``), shows in the plan,
                   and then requires at apply: e.g. the SSH host key trusted at first contact,
                   so a key is only ever accepted after it was shown. Usually also computed.
``ignore_changes`` attributes recorded but never a reason to change: where this machine found
                   something (a package's source directory), not what the resource is.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence


@dataclass(frozen=True)
class Owner:
    """Who owns a resource: the cluster name and the lineage of the state that records it."""

    cluster: str
    lineage: str

    @property
    def short(self) -> str:
        return self.lineage.replace("-", "")[:8]


@dataclass(frozen=True)
class KnownResource:
    address: str
    attributes: Mapping[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class ListScope:
    """``rebuilding``: addresses the user asked to replace (and what depends on them). A type
    may skip verifying their identity, e.g. a changed SSH host key, since they are rebuilt."""

    owner: Owner
    known: Sequence[KnownResource] = ()
    rebuilding: frozenset[str] = frozenset()


@dataclass
class LiveResource:
    address: str
    id: str
    attributes: dict[str, Any]
    token: str | None = None


@dataclass(frozen=True)
class Unreadable:
    """A known resource that ``list`` could not look at; ``reason`` names the host or endpoint
    and the error."""

    address: str
    reason: str


Listing = Sequence["LiveResource | Unreadable"]


@dataclass
class ProviderContext:
    """What a resource type may use: the owner, the working directory of the run, where local
    files of the run live, a progress callback (address, message), a retry callback (address or
    None, message, data) told of every retried cloud call, objects shared by the types of one run
    (``shared``: API clients and their rate limits), and whether the run destroys everything (a
    type may then skip care that only matters to what stays, like draining)."""

    owner: Owner
    workdir: Path
    data_dir: Path
    progress: Callable[[str, str], None] = field(default=lambda address, message: None)
    retry: Callable[[str | None, str, dict[str, Any]], None] = field(
        default=lambda address, message, data: None)
    shared: dict[str, Any] = field(default_factory=dict)
    destroying: bool = False


class ResourceType(abc.ABC):
    """See the module docstring for the contract."""

    type_name: ClassVar[str]
    force_new: ClassVar[frozenset[str]] = frozenset()
    computed: ClassVar[frozenset[str]] = frozenset()
    ignore_drift: ClassVar[frozenset[str]] = frozenset()
    plan_facts: ClassVar[frozenset[str]] = frozenset()
    ignore_changes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx

    @abc.abstractmethod
    def list(self, scope: ListScope) -> Listing: ...

    @abc.abstractmethod
    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource: ...

    @abc.abstractmethod
    def update(
        self, address: str, prior: LiveResource, desired: dict[str, Any]
    ) -> LiveResource: ...

    @abc.abstractmethod
    def delete(self, address: str, prior: LiveResource) -> None: ...

    def read_facts(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        """Optional, read-only: the ``plan_facts`` of a resource about to be created."""
        return {}

    def is_head(self, attributes: Mapping[str, Any]) -> bool:
        """Optional: whether a resource of this type with ``attributes`` is a cluster's Ray head
        (what ``recover`` probes)."""
        return False

    def head_health(self, record: LiveResource) -> str | None:
        """Optional, for heads: None when the head answers (its machine is reachable, Ray's GCS
        and the dashboard respond), else why it is lost. Quick and read-only."""
        return None

    def status(self, record: LiveResource) -> dict[str, Any]:
        """Optional: live facts for ``provisioner status`` (nodes, app states)."""
        return {}

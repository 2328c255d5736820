"""One command's view of a deployment: the spec, its expansion, the state backend, providers.

The CLI builds a :class:`Workspace` and calls these steps; each returns data and reports through
``emit``. Nothing here prints.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from provisioner.blueprint import Blueprint, expand
from provisioner.errors import PlanError, ProviderError
from provisioner.events import Emit, make_event
from provisioner.plan import Action, Plan, check_fresh, digest
from provisioner.planner import PlanOptions, TypeInfo, make_plan
from provisioner.providers import Providers, resource_type_class
from provisioner.providers.base import KnownResource, ListScope, LiveResource, Owner, ProviderContext
from provisioner.spec.loader import StateRef
from state.backend import StateBackend
from state.document import StateDocument


@dataclass
class VarArgs:
    """--var / --var-file in the order given (later wins)."""

    items: Sequence[tuple[str, str]] = ()


def type_info(type_name: str) -> TypeInfo:
    cls = resource_type_class(type_name)
    return TypeInfo(force_new=cls.force_new, computed=cls.computed, ignore_drift=cls.ignore_drift,
                    plan_facts=cls.plan_facts, ignore_changes=cls.ignore_changes)


class StateLocation:
    """Where a deployment's state lives and what its providers need: enough for the commands
    that only read (output, state, status, force-unlock)."""

    def __init__(self, name: str, state: StateRef, workdir: Path, emit: Emit) -> None:
        self.name = name
        self.state = state
        self.workdir = workdir
        self.emit = emit
        self._backend: StateBackend | None = None

    @classmethod
    def of(cls, spec_file: Path, emit: Emit,
           var_items: Sequence[tuple[str, str]] = ()) -> "StateLocation":
        from provisioner.spec import locate_state

        name, state = locate_state(spec_file, var_items)
        return cls(name, state, spec_file.parent, emit)

    @property
    def data_dir(self) -> Path:
        """Local files of the runs; next to the spec (``.provisioner/``) if the state is remote."""
        return self.state.data_dir

    def backend(self) -> StateBackend:
        """The state's backend, one per command (S3 and GCS check their bucket once)."""
        if self._backend is None:
            state = self.state
            if state.backend == "s3":
                from state.s3 import S3Backend

                assert state.bucket is not None and state.key is not None
                self._backend = S3Backend(state.bucket, state.key, region=state.region)
            elif state.backend == "gcs":
                from state.gcs import GCSBackend

                assert state.bucket is not None and state.key is not None
                self._backend = GCSBackend(state.bucket, state.key, project=state.project)
            else:
                from state.local import LocalBackend

                assert state.path is not None
                self._backend = LocalBackend(state.path)
        return self._backend

    def providers(self, document: StateDocument) -> Providers:
        emit = self.emit

        def progress(address: str, message: str) -> None:
            emit(make_event("apply_progress", f"{address}: {message}", address=address))

        def retry(address: str | None, message: str, data: dict[str, Any]) -> None:
            emit(make_event("provider_retry", f"{address}: {message}" if address else message,
                            address=address, level="warn", data=data))

        ctx = ProviderContext(
            owner=Owner(cluster=self.name, lineage=document.lineage),
            workdir=self.workdir,
            data_dir=self.data_dir,
            progress=progress,
            retry=retry,
        )
        return Providers(ctx)


class Workspace(StateLocation):
    """The whole spec, loaded and validated, for the commands that plan."""

    def __init__(self, spec_file: Path, var_args: VarArgs, emit: Emit,
                 plan_variables: dict[str, Any] | None = None) -> None:
        self._var_items = list(var_args.items)
        self.loaded = _load(spec_file, self._var_items, plan_variables)
        super().__init__(self.loaded.spec.name, self.loaded.state, self.loaded.base_dir, emit)
        self.spec_path = self.loaded.path
        self._blueprint: Blueprint | None = None
        self.placement: dict[str, Any] | None = None

    @property
    def blueprint(self) -> Blueprint:
        if self._blueprint is None:
            self._blueprint = expand(self.loaded, self.placement)
        return self._blueprint

    def desired_attributes(self) -> dict[str, dict[str, Any]]:
        """The spec's attributes by address, references unresolved (where an interrupted
        create would have made its resource)."""
        return {address: resource.attributes
                for address, resource in self.blueprint.resources.items()}

    def checkpoint_store(self):
        """The spec's checkpoint store (``serve.checkpoint_store``; default: ``checkpoints``
        next to the state, a directory or, for S3 or GCS state, a prefix in its bucket, so that
        recover finds them wherever the state is found)."""
        from provisioner.checkpoint.stores import FileStore, open_store

        serve = self.loaded.spec.serve
        if serve is None or serve.checkpoint_store is None:
            if self.state.scheme is not None:
                folder = posixpath.dirname(self.state.key or "")
                prefix = f"{folder}/checkpoints" if folder else "checkpoints"
                return open_store(f"{self.state.scheme}://{self.state.bucket}/{prefix}",
                                  self.workdir)
            return FileStore(self.data_dir / "checkpoints")
        return open_store(serve.checkpoint_store, self.workdir)

    def use_state(self, document: StateDocument) -> None:
        """Expand the spec as the state says the cluster is placed (see ``recover``)."""
        placement = document.history.get("placement") or None
        if placement != self.placement:
            self.placement, self._blueprint = placement, None

    def use_manifest(self, manifest_path: Path) -> None:
        """Deploy the Serve config at ``manifest_path`` instead of the spec's (``recover``)."""
        self.loaded = _load(self.loaded.path, self._var_items, None, manifest_path)
        self._blueprint = None

    def plan(
        self,
        document: StateDocument,
        state_exists: bool,
        providers: Providers,
        options: PlanOptions,
        refresh: bool = True,
        lost: frozenset[str] = frozenset(),
    ) -> Plan:
        """``lost``: resources known to be gone (recover: the apps of a lost head, the
        resources of a host that does not answer); refresh does not look for them."""
        self.use_state(document)
        blueprint = None if options.destroy else self.blueprint
        rebuilding = self._rebuilding(options.replace)
        live = (refresh_live(document, blueprint, providers, self.emit, rebuilding, lost)
                if refresh else None)
        facts = (read_facts(document, blueprint, providers, self.emit, rebuilding, live,
                            skip=options.hold)
                 if blueprint else {})
        plan = make_plan(
            blueprint=blueprint,
            document=document,
            state_exists=state_exists,
            live=live,
            type_info=type_info,
            options=options,
            spec_path=str(self.spec_path),
            variables=self.loaded.variables.for_plan(),
            facts=facts,
        )
        return plan

    def _rebuilding(self, replace: list[str]) -> frozenset[str]:
        found = set(replace)
        for address in replace:
            found |= self.blueprint.graph.transitive_dependents(address)
        return frozenset(found)

    def check_saved_plan(self, plan: Plan, document: StateDocument, state_exists: bool,
                         state_desc: str) -> None:
        """A saved plan applies only to the state it was made from and to the same spec."""
        self.use_state(document)
        check_fresh(plan, document.lineage if state_exists else None, document.serial, state_desc)
        self.loaded.variables.check_against_plan(plan.variables)
        if plan.destroy:
            return
        resources = self.blueprint.resources
        for change in plan.changes:
            if change.action in (Action.DELETE, Action.NOOP):
                continue
            resource = resources.get(change.address)
            if resource is None or digest(resource.attributes) != change.desired_digest:
                raise PlanError(
                    f"the spec changed since the plan was made ({change.address} differs)",
                    hint="run plan again",
                )


def _load(spec_file: Path, items: list[tuple[str, str]], plan_variables: dict[str, Any] | None,
          manifest: Path | None = None):
    """Load the spec. A saved plan's variable values come first, as if from a var file, so
    applying it needs no flags but the sensitive values (which the plan holds only as digests)."""
    from provisioner.values import SENSITIVE_PREFIX
    from provisioner.spec import load_spec

    if not plan_variables:
        return load_spec(spec_file, var_items=items, manifest_override=manifest)
    known = {name: value for name, value in plan_variables.items()
             if not (isinstance(value, str) and value.startswith(SENSITIVE_PREFIX))}
    with tempfile.TemporaryDirectory(prefix="provisioner-") as tmp:
        var_file = Path(tmp) / "plan-variables.json"
        var_file.write_text(json.dumps(known))
        return load_spec(spec_file, var_items=[("file", str(var_file)), *items],
                         manifest_override=manifest)


def refresh_live(
    document: StateDocument,
    blueprint: Blueprint | None,
    providers: Providers,
    emit: Emit,
    rebuilding: frozenset[str] = frozenset(),
    lost: frozenset[str] = frozenset(),
) -> dict[str, LiveResource]:
    """List every type of the state and the spec once (types in parallel); ``lost`` addresses
    are known to be gone and not looked for."""
    known: dict[str, list[KnownResource]] = {}
    for address, record in document.resources.items():
        if address not in lost:
            known.setdefault(record.type, []).append(
                KnownResource(address, record.attributes, record.id))
    if blueprint is not None:
        for address, resource in blueprint.resources.items():
            if address not in document.resources and address not in lost:
                known.setdefault(resource.type, []).append(
                    KnownResource(address, resource.attributes))
    if not known:
        return {}
    emit(make_event("refresh_start", f"refreshing {len(known)} resource type(s)"))
    owner = providers.ctx.owner

    def list_type(type_name: str) -> list[LiveResource]:
        return providers.get(type_name).list(ListScope(owner, known[type_name], rebuilding))

    # A resource is known by its create token first: an object a create-before-destroy moved
    # aside (``<address>#deposed``) still says the address it was made for.
    by_token = {record.token: address for address, record in document.resources.items()
                if record.token}
    live: dict[str, LiveResource] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(known))) as pool:
        for items in pool.map(list_type, sorted(known)):
            for item in items:
                address = by_token.get(item.token, item.address) if item.token else item.address
                if address not in lost:
                    item.address = address
                    live[address] = item
    emit(make_event("refresh_complete", f"found {len(live)} live resource(s)",
                    data={"live": len(live)}))
    return live


def read_facts(
    document: StateDocument,
    blueprint: Blueprint,
    providers: Providers,
    emit: Emit,
    rebuilding: frozenset[str] = frozenset(),
    live: Mapping[str, LiveResource] | None = None,
    skip: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """Plan-time facts of the resources the plan will create, whose type reads some (in
    parallel). Only resources without references qualify: their desired attributes are known
    now. One that cannot be read is left without facts (its create then fails and says why)."""
    records = document.resources

    def will_create(address: str) -> bool:
        record = records.get(address)
        return (record is None or record.status == "tainted" or address in rebuilding
                or (live is not None and address not in live))

    wanted = [
        resource for address, resource in blueprint.resources.items()
        if address not in skip and will_create(address)
        and resource_type_class(resource.type).plan_facts
        and not resource.references()
    ]
    if not wanted:
        return {}

    def read(resource) -> tuple[str, dict[str, Any]]:
        provider = providers.get(resource.type)
        try:
            return resource.address, provider.read_facts(resource.address,
                                                         dict(resource.attributes))
        except ProviderError as error:
            emit(make_event("facts_unavailable", f"{resource.address}: {error}",
                            address=resource.address, level="warn"))
            return resource.address, {}

    with ThreadPoolExecutor(max_workers=min(16, len(wanted))) as pool:
        return dict(pool.map(read, wanted))


def install_stop_handlers(stop: threading.Event, emit: Emit) -> None:
    """SIGINT/SIGTERM: start no new change, let those in flight finish and be recorded."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            return
        stop.set()
        emit(make_event("interrupt", f"received {signal.Signals(signum).name}: finishing the "
                        "changes in flight, starting no new ones", level="warn"))

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)

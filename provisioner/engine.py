"""The apply engine: executes exactly the plan, in parallel, journalling every provider call.

For every change that touches the world: a pending entry with an idempotency token is written to
state first, then the provider is called, then the result is recorded and the entry cleared, in
one state write. Killing the process at any moment leaves nothing unrecorded: a later run finds
the pending entry and resolves it (:func:`resolve_pending`).

Failure policy: a failed change marks its resource tainted (an interrupted create that left
something behind is adopted as tainted), changes that depend on it are skipped, independent work
completes; the caller gets the failures and exits 1. A stop request (SIGINT/SIGTERM) starts no
new change, lets the calls in flight finish, and records them.
"""

from __future__ import annotations

import graphlib
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from provisioner.blueprint import Blueprint
from provisioner.errors import ProviderError, TransientProviderError
from provisioner.events import Emit, make_event
from provisioner.plan import Action, Plan, ResourceChange
from provisioner.providers import Providers
from provisioner.providers.base import KnownResource, ListScope, LiveResource
from provisioner.resources import Unresolved, get_path, resolve, resolve_partially
from provisioner.values import redact
from state import journal
from state.document import PendingOperation, ResourceRecord, StateDocument

Node = tuple[str, str]  # ("apply" | "delete", address)
RETRY_ATTEMPTS = 5


@dataclass
class ApplyResult:
    completed: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0


class Applier:
    def __init__(
        self,
        *,
        plan: Plan,
        blueprint: Blueprint | None,
        session,
        providers: Providers,
        emit: Emit,
        parallelism: int = 10,
        stop: threading.Event | None = None,
        retry_wait: Callable[[int], float] = lambda attempt: min(2**attempt, 20) * 0.5,
    ) -> None:
        self.plan = plan
        self.blueprint = blueprint
        self.session = session
        self.providers = providers
        self.emit = emit
        self.parallelism = max(1, parallelism)
        self.stop = stop or threading.Event()
        self.retry_wait = retry_wait
        self.changes = {c.address: c for c in plan.actionable()}
        self.secrets = blueprint.sensitive_values if blueprint else []

    # -- the walk ----------------------------------------------------------------------------

    def run(self) -> ApplyResult:
        started = time.monotonic()
        result = ApplyResult()
        self._accept_drift()
        sorter = graphlib.TopologicalSorter(self._nodes())
        sorter.prepare()
        failed: set[str] = set()
        ready: list[Node] = []
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            running: dict[Future, Node] = {}
            while sorter.is_active():
                ready.extend(sorted(sorter.get_ready()))
                # Submit no more than the pool runs, so a stop request holds back the rest.
                while ready and len(running) < self.parallelism:
                    node = ready.pop(0)
                    blocked = self._blocked_by(node, failed)
                    if blocked or self.stop.is_set():
                        reason = f"{blocked} failed" if blocked else "apply was interrupted"
                        self._skip(node, reason, result, failed)
                        sorter.done(node)
                        continue
                    running[pool.submit(self._execute, node)] = node
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    node = running.pop(future)
                    error = future.exception()
                    if error is None:
                        result.completed.append(node[1])
                    else:
                        failed.add(node[1])
                        result.failures[node[1]] = _describe(error)
                    sorter.done(node)
        result.interrupted = self.stop.is_set()
        if self.blueprint is not None and not self.plan.destroy:
            result.outputs = self._record_outputs()
        elif self.plan.destroy and self.session.document.outputs:
            self.session.update(lambda doc: setattr(doc, "outputs", {}))
        result.elapsed_s = time.monotonic() - started
        return result

    def _nodes(self) -> dict[Node, set[Node]]:
        """The apply graph. A resource that is replaced gets a delete and an apply node; deletes
        run after the deletes of what depends on them, applies after what they depend on."""
        nodes: dict[Node, set[Node]] = {}
        deleting = {a for a, c in self.changes.items() if c.action in (Action.DELETE, Action.REPLACE)}
        applying = {a for a, c in self.changes.items() if c.action is not Action.DELETE}
        records = self.session.document.resources
        for address in applying:
            change = self.changes[address]
            deps = {("apply", d) for d in change.dependencies if d in applying}
            if change.action is Action.REPLACE and not change.create_before_destroy:
                deps.add(("delete", address))
            nodes[("apply", address)] = deps
        for address in deleting:
            dependents = {a for a in deleting if address in _recorded_deps(records, a)}
            deps = {("delete", d) for d in dependents if d != address}
            change = self.changes[address]
            if change.action is Action.DELETE:
                # What depended on it and stays is updated first: e.g. the load balancer stops
                # sending a node traffic before the node stops.
                deps |= {("apply", a) for a in applying if address in _recorded_deps(records, a)}
            if change.action is Action.REPLACE and change.create_before_destroy:
                deps.add(("apply", address))
                deps |= {("apply", a) for a in applying if address in self.changes[a].dependencies}
            nodes[("delete", address)] = deps
        return nodes

    def _blocked_by(self, node: Node, failed: set[str]) -> str | None:
        change = self.changes[node[1]]
        if node[0] == "apply":
            for dep in change.dependencies:
                if dep in failed:
                    return dep
            if node[1] in failed:  # its delete half failed
                return node[1]
        return None

    def _skip(self, node: Node, reason: str, result: ApplyResult, failed: set[str]) -> None:
        address = node[1]
        failed.add(address)  # what depends on a skipped change is skipped too
        result.skipped.append(address)
        self.emit(make_event("apply_skipped", f"{address}: skipped, {reason}", address=address,
                             action=self.changes[address].action.value, level="warn"))

    # -- one change --------------------------------------------------------------------------

    def _execute(self, node: Node) -> None:
        phase, address = node
        change = self.changes[address]
        if phase == "delete":
            self._delete(change)
        elif change.action is Action.UPDATE:
            self._update(change)
        else:
            self._create(change)

    def _create(self, change: ResourceChange) -> None:
        desired = self._desired(change)
        # What the plan showed and the user approved (e.g. a host key) is what create must find.
        for key in self.providers.get(change.type).plan_facts:
            if change.after and key in change.after:
                desired[key] = change.after[key]
        token = uuid.uuid4().hex
        deposed = self._depose(change)
        self._journal(change, "create", token)
        provider = self.providers.get(change.type)
        started = self._started(change, "create")
        try:
            live = self._call(change.address, lambda: provider.create(change.address, desired, token))
        except Exception as error:
            self._record_failed_create(change, desired, token, deposed)
            self._errored(change, "create", started, error)
            raise
        self._record(change, live, token)
        self._completed(change, "create", started, live)

    def _depose(self, change: ResourceChange) -> str | None:
        """Create-before-destroy: the object being replaced moves aside in the state, to
        ``<address>#deposed``, until its delete; so the new one can be recorded at the address
        and the old one is never unrecorded (refresh finds it there by its token)."""
        if not (change.action is Action.REPLACE and change.create_before_destroy):
            return None
        deposed = deposed_address(change.address)

        def move(doc: StateDocument) -> None:
            if change.address in doc.resources:
                doc.resources[deposed] = doc.resources.pop(change.address)

        self.session.update(move)
        return deposed if deposed in self.session.document.resources else None

    def _update(self, change: ResourceChange) -> None:
        desired = self._desired(change)
        token = uuid.uuid4().hex
        prior = self._prior(change.address)
        self._journal(change, "update", token)
        provider = self.providers.get(change.type)
        started = self._started(change, "update")
        try:
            live = self._call(change.address, lambda: provider.update(change.address, prior, desired))
        except Exception as error:
            self.session.update(lambda doc: (_taint(doc, change.address), journal.finish(doc, token)))
            self._errored(change, "update", started, error)
            raise
        self._record(change, live, token)
        self._completed(change, "update", started, live)

    def _delete(self, change: ResourceChange) -> None:
        recorded = change.address
        if change.action is Action.REPLACE and change.create_before_destroy:
            recorded = deposed_address(change.address)
        if recorded not in self.session.document.resources:
            return  # gone already (found deleted by refresh)
        token = uuid.uuid4().hex
        prior = self._prior(recorded)
        self._journal(change, "delete", token)
        provider = self.providers.get(change.type)
        started = self._started(change, "delete")
        try:
            if not change.forget:
                self._call(change.address, lambda: provider.delete(change.address, prior))
        except Exception as error:
            self.session.update(lambda doc: (_taint(doc, recorded), journal.finish(doc, token)))
            self._errored(change, "delete", started, error)
            raise

        def forget(doc: StateDocument) -> None:
            doc.resources.pop(recorded, None)
            journal.finish(doc, token)

        self.session.update(forget)
        self._completed(change, "delete", started, None)

    def _call(self, address: str, call: Callable[[], Any]) -> Any:
        """Retry transient provider errors with backoff; each retry is an event."""
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return call()
            except TransientProviderError as error:
                if attempt == RETRY_ATTEMPTS:
                    raise
                delay = self.retry_wait(attempt)
                self.emit(make_event("apply_retry", f"{address}: {error}; retrying in {delay:.1f}s",
                                     address=address, level="warn", data={"attempt": attempt}))
                time.sleep(delay)

    # -- state -------------------------------------------------------------------------------

    def _desired(self, change: ResourceChange) -> dict[str, Any]:
        if self.blueprint is None:
            raise ProviderError("apply needs the spec to create or update", address=change.address)
        attributes = self.blueprint.resources[change.address].attributes
        records = self.session.document.resources

        def lookup(address: str, attribute: str) -> Any:
            try:
                return get_path(records[address].attributes, attribute)
            except KeyError:
                raise ProviderError(
                    f"reference ${{{address}.{attribute}}}: {address} has no attribute "
                    f"'{attribute}' after apply",
                    address=change.address,
                ) from None

        return resolve(attributes, lookup)

    def _prior(self, address: str) -> LiveResource:
        record = self.session.document.resources[address]
        return LiveResource(address, record.id, dict(record.attributes), record.token)

    def _journal(self, change: ResourceChange, action: str, token: str) -> None:
        entry = PendingOperation(token=token, address=change.address, type=change.type,
                                 action=action)
        self.session.update(lambda doc: journal.begin(doc, entry))

    def _record(self, change: ResourceChange, live: LiveResource, token: str) -> None:
        attributes, sensitive = redact(live.attributes, self.secrets)

        def store(doc: StateDocument) -> None:
            doc.resources[change.address] = ResourceRecord(
                type=change.type,
                id=live.id,
                attributes=attributes,
                dependencies=change.dependencies,
                token=live.token or token,
                sensitive=sensitive,
            )
            journal.finish(doc, token)

        self.session.update(store)

    def _record_failed_create(self, change: ResourceChange, desired: dict, token: str,
                              deposed: str | None = None) -> None:
        """Adopt, as tainted, whatever a failed create left behind; else just clear the entry
        (and put back the object a create-before-destroy moved aside: it stays in use)."""
        try:
            scope = ListScope(self.providers.ctx.owner, [KnownResource(change.address, desired)])
            found = [r for r in self.providers.get(change.type).list(scope) if r.token == token]
        except Exception:  # the create already failed; looking for leftovers is best effort
            found = []

        def store(doc: StateDocument) -> None:
            journal.finish(doc, token)
            doc.resources.pop(change.address, None)
            if deposed in doc.resources and not found:
                doc.resources[change.address] = doc.resources.pop(deposed)
            if found:
                attributes, sensitive = redact(found[0].attributes, self.secrets)
                doc.resources[change.address] = ResourceRecord(
                    type=change.type, id=found[0].id, attributes=attributes,
                    dependencies=change.dependencies, token=token, status="tainted",
                    sensitive=sensitive,
                )

        self.session.update(store)

    def _accept_drift(self) -> None:
        """Record what refresh found, so the state matches the world the plan was made from."""
        drift = [d for d in self.plan.drift if d.address in self.session.document.resources]
        if not drift:
            return

        def accept(doc: StateDocument) -> None:
            for item in drift:
                if item.kind == "deleted":
                    doc.resources.pop(item.address, None)
                elif item.after is not None:
                    doc.resources[item.address] = doc.resources[item.address].model_copy(
                        update={"attributes": item.after})

        self.session.update(accept)

    def _record_outputs(self) -> dict[str, Any]:
        records = self.session.document.resources

        def lookup(address: str, attribute: str) -> Any:
            try:
                return get_path(records[address].attributes, attribute)
            except KeyError:
                raise Unresolved(address) from None

        outputs, unknown = resolve_partially(self.blueprint.outputs, lookup)
        outputs = {k: v for k, v in outputs.items() if k not in unknown}
        outputs, _ = redact(outputs, self.secrets)
        if outputs != self.session.document.outputs:

            def store(doc: StateDocument) -> None:
                doc.outputs = outputs

            self.session.update(store)
        return outputs

    # -- events ------------------------------------------------------------------------------

    def _started(self, change: ResourceChange, verb: str) -> float:
        self.emit(make_event("apply_start", f"{change.address}: {verb} started",
                             address=change.address, action=verb))
        return time.monotonic()

    def _completed(self, change, verb: str, started: float, live: LiveResource | None) -> None:
        elapsed = time.monotonic() - started
        suffix = f" [id={live.id}]" if live else ""
        self.emit(make_event("apply_complete", f"{change.address}: {verb} complete after "
                             f"{elapsed:.1f}s{suffix}", address=change.address, action=verb,
                             elapsed_s=round(elapsed, 3)))

    def _errored(self, change, verb: str, started: float, error: BaseException) -> None:
        elapsed = time.monotonic() - started
        self.emit(make_event("apply_errored", f"{change.address}: {verb} failed: "
                             f"{_describe(error)}", address=change.address, action=verb,
                             elapsed_s=round(elapsed, 3), level="error"))


def _taint(doc: StateDocument, address: str) -> None:
    if address in doc.resources:
        doc.resources[address] = doc.resources[address].model_copy(update={"status": "tainted"})


def _recorded_deps(records: dict[str, ResourceRecord], address: str) -> list[str]:
    record = records.get(address)
    return record.dependencies if record else []


def _describe(error: BaseException) -> str:
    if isinstance(error, ProviderError):
        return f"{error}\n    {error.hint}" if error.hint else str(error)
    return f"{type(error).__name__}: {error}"


def deposed_address(address: str) -> str:
    """Where a create-before-destroy replace keeps the old object until it is deleted."""
    return f"{address}#deposed"


def resolve_pending(session, providers: Providers, emit: Emit,
                    desired: Mapping[str, Mapping[str, Any]] | None = None) -> int:
    """Resolve journal entries left by an interrupted run: adopt what exists (found by its
    token), clear what does not. Returns how many entries were resolved. ``desired`` (address
    -> the spec's attributes) tells a type where to look for a resource the state never
    recorded (its region, its host)."""
    pending = list(session.document.pending)
    if not pending:
        return 0
    records = session.document.resources
    by_type: dict[str, list[PendingOperation]] = {}
    for entry in pending:
        by_type.setdefault(entry.type, []).append(entry)
    live: dict[str, LiveResource] = {}
    for type_name, entries in by_type.items():
        known = [KnownResource(e.address, records[e.address].attributes if e.address in records
                               else dict((desired or {}).get(e.address) or {}))
                 for e in entries]
        for item in providers.get(type_name).list(ListScope(providers.ctx.owner, known)):
            live[item.address] = item

    def settle(doc: StateDocument) -> None:
        for entry in pending:
            found = live.get(entry.address)
            if entry.action == "create" and found is not None and found.token == entry.token:
                doc.resources[entry.address] = ResourceRecord(
                    type=entry.type, id=found.id, attributes=found.attributes, token=entry.token,
                    dependencies=[],
                )
                outcome = "adopted (it exists)"
            elif entry.action == "delete" and found is None:
                doc.resources.pop(entry.address, None)
                outcome = "removed from state (it is gone)"
            elif entry.action == "update" and found is not None and entry.address in doc.resources:
                doc.resources[entry.address] = doc.resources[entry.address].model_copy(
                    update={"attributes": found.attributes})
                outcome = "refreshed"
            else:
                outcome = "cleared (nothing to adopt)"
            journal.finish(doc, entry.token)
            emit(make_event("journal_resolved", f"{entry.address}: interrupted {entry.action} "
                            f"{outcome}", address=entry.address, action=entry.action, level="warn"))

    session.update(settle)
    return len(pending)

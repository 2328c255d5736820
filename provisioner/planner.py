"""diff(spec, state, live) -> Plan. Pure: no provider calls, no I/O.

Refresh (the providers' batched ``list``) happens before and hands its result in as ``live``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from provisioner.blueprint import Blueprint
from provisioner.errors import SpecError
from provisioner.graph import ResourceGraph
from provisioner.plan import (
    Action,
    Drift,
    Plan,
    ResourceChange,
    digest,
)
from provisioner.providers.base import LiveResource
from provisioner.resources import UNKNOWN, Unresolved, get_path, resolve_partially
from provisioner.values import flatten, redact, redact_paths
from state.document import ResourceRecord, StateDocument


@dataclass(frozen=True)
class TypeInfo:
    force_new: frozenset[str] = frozenset()
    computed: frozenset[str] = frozenset()
    ignore_drift: frozenset[str] = frozenset()
    plan_facts: frozenset[str] = frozenset()
    ignore_changes: frozenset[str] = frozenset()


@dataclass
class PlanOptions:
    destroy: bool = False
    targets: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)
    # Left as recorded, no change planned unless they leave the spec: the resources of a host
    # that does not answer while recover replaces the head.
    hold: frozenset[str] = frozenset()


def make_plan(
    *,
    blueprint: Blueprint | None,
    document: StateDocument,
    state_exists: bool,
    live: Mapping[str, LiveResource] | None,
    type_info: Callable[[str], TypeInfo],
    options: PlanOptions,
    spec_path: str,
    variables: dict[str, Any],
    facts: Mapping[str, dict[str, Any]] | None = None,
) -> Plan:
    """``facts``: what resources to be created read at plan time (see ``plan_facts``)."""
    records = document.resources
    facts = facts or {}
    drift, prior = refresh_view(records, live, type_info)
    if options.hold:  # not refreshed: they stay as recorded, drift included
        drift = [d for d in drift if d.address not in options.hold]
        prior.update({a: records[a].attributes for a in options.hold if a in records})
    desired = {} if options.destroy or blueprint is None else blueprint.resources
    secrets = blueprint.sensitive_values if blueprint else []
    _check_addresses(options, desired, records)
    selected = _selected(options, desired, records, blueprint)

    changes: list[ResourceChange] = []
    planned: dict[str, tuple[Action, dict[str, Any]]] = {}

    def lookup(address: str, attribute: str) -> Any:
        action, values = planned[address]
        try:
            value = get_path(values, attribute)
        except KeyError:
            if action in (Action.CREATE, Action.REPLACE) or prior.get(address) is None:
                raise Unresolved(address) from None
            try:
                value = get_path(prior[address], attribute)
            except KeyError:
                raise Unresolved(address) from None
        if value == UNKNOWN:
            raise Unresolved(address)
        return value

    order = blueprint.graph.order() if desired and blueprint else []
    for address in order:
        resource = desired[address]
        info = type_info(resource.type)
        resolved, unknown = resolve_partially(resource.attributes, lookup)
        after, sensitive = redact(resolved, secrets)
        change = _change_for(address, resource.type, after, unknown, records.get(address),
                             prior.get(address), info, options)
        change.dependencies = sorted(resource.references())
        change.create_before_destroy = resource.create_before_destroy
        change.desired_digest = digest(resource.attributes)
        if change.action in (Action.CREATE, Action.REPLACE) and address in facts:
            change.after = {**change.after, **facts[address]}
        planned[address] = (change.action, resolved)
        if address in selected:
            changes.append(change)

    for address in _deletion_order(records, desired):
        if address not in selected:
            continue
        record = records[address]
        reason = "destroy requested" if options.destroy else "no longer in the spec"
        forget = address in options.hold
        if forget:
            reason = "its machine does not answer: removed from the state only"
        changes.append(
            ResourceChange(
                address=address,
                type=record.type,
                action=Action.DELETE,
                before=prior.get(address) or record.attributes,
                reason=reason,
                dependencies=sorted(record.dependencies),
                forget=forget,
            )
        )

    outputs: dict[str, Any] = {}
    if blueprint and not options.destroy:
        outputs, _ = resolve_partially(blueprint.outputs, lookup)
        outputs, _ = redact(outputs, secrets)
    return Plan(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        spec_path=spec_path,
        lineage=document.lineage if state_exists else None,
        serial=document.serial,
        destroy=options.destroy,
        refreshed=live is not None,
        targets=list(options.targets),
        variables=variables,
        changes=changes,
        drift=drift,
        outputs=outputs,
    )


def _change_for(
    address: str,
    type_name: str,
    after: dict[str, Any],
    unknown: set[str],
    record: ResourceRecord | None,
    prior: dict[str, Any] | None,
    info: TypeInfo,
    options: PlanOptions,
) -> ResourceChange:
    change = ResourceChange(
        address=address,
        type=type_name,
        action=Action.NOOP,
        before=prior,
        after=after,
        after_unknown=sorted(unknown),
    )
    if record is None:
        change.action, change.reason = Action.CREATE, None
    elif prior is None:
        change.action, change.reason = Action.CREATE, "deleted outside provisioner"
    elif record.status == "tainted":
        change.action, change.reason = Action.REPLACE, "tainted by a failed or interrupted change"
    elif address in options.replace:
        change.action, change.reason = Action.REPLACE, "replacement requested with --replace"
    if prior is not None:
        change.changed_paths = changed_paths(prior, after, info.computed | info.ignore_changes,
                                             unknown)
    if change.action is Action.NOOP and change.changed_paths:
        forcing = [p for p in change.changed_paths if _top(p) in info.force_new]
        if forcing:
            change.action, change.replace_paths = Action.REPLACE, forcing
            change.reason = "changing " + ", ".join(forcing) + " forces replacement"
        else:
            change.action = Action.UPDATE
    return change


def refresh_view(
    records: Mapping[str, ResourceRecord],
    live: Mapping[str, LiveResource] | None,
    type_info: Callable[[str], TypeInfo],
) -> tuple[list[Drift], dict[str, dict[str, Any] | None]]:
    """The prior attributes to diff against (live where refreshed) and the drift found."""
    prior: dict[str, dict[str, Any] | None] = {}
    drift: list[Drift] = []
    for address, record in records.items():
        if live is None:
            prior[address] = record.attributes
            continue
        found = live.get(address)
        if found is None:
            prior[address] = None
            drift.append(Drift(address=address, type=record.type, kind="deleted",
                               before=record.attributes))
            continue
        ignored = type_info(record.type).ignore_drift
        attributes = dict(found.attributes)
        for key in ignored:  # keep what the state recorded for attributes not compared live
            if key in record.attributes:
                attributes[key] = record.attributes[key]
            else:
                attributes.pop(key, None)
        if record.sensitive:  # live reads give real values; the state keeps digests
            attributes, _ = redact_paths(attributes, record.sensitive)
        paths = changed_paths(record.attributes, attributes, frozenset(), set(), both_sides=True)
        prior[address] = attributes
        if paths:
            drift.append(Drift(address=address, type=record.type, kind="changed",
                               before=record.attributes, after=attributes, changed_paths=paths))
    return drift, prior


def changed_paths(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    computed: frozenset[str],
    unknown: set[str],
    *,
    both_sides: bool = False,
) -> list[str]:
    """Dotted paths whose value differs. Keys the desired side omits are compared only when
    they are not computed (a computed attribute is the provider's to set)."""
    left = {k: v for k, v in flatten(dict(before)).items() if _top(k) not in computed}
    right = {k: v for k, v in flatten(dict(after)).items() if _top(k) not in computed}
    paths = {p for p in right if p in unknown or left.get(p, _MISSING) != right[p]}
    paths |= {p for p in left if p not in right and not _covered(p, right)}
    if not both_sides:
        paths = {p for p in paths if _top(p) not in computed}
    return sorted(paths)


_MISSING = object()


def _covered(path: str, flat: Mapping[str, Any]) -> bool:
    """A path under a leaf that is present on the other side (e.g. the leaf became {})."""
    parts = path.split(".")
    return any(".".join(parts[:i]) in flat for i in range(1, len(parts)))


def _top(path: str) -> str:
    return path.split(".", 1)[0].split("[", 1)[0]


def _check_addresses(options: PlanOptions, desired: Mapping, records: Mapping) -> None:
    for flag, addresses in (("--target", options.targets), ("--replace", options.replace)):
        for address in addresses:
            if address not in desired and address not in records:
                raise SpecError(
                    f"{flag} {address}: no such resource in the spec or the state",
                    hint="list them with: provisioner state list",
                )


def _selected(options, desired, records, blueprint) -> set[str]:
    held = set(options.hold) & set(desired)
    everything = set(desired) | set(records)
    if not options.targets:
        return everything - held
    selected = set(options.targets)
    graph = _combined_graph(desired, records, blueprint)
    for address in options.targets:
        if options.destroy:
            selected |= graph.transitive_dependents(address)
        else:
            selected |= graph.transitive_dependencies(address)
    return selected - held


def _combined_graph(desired, records, blueprint) -> ResourceGraph:
    deps = {a: set(r.dependencies) for a, r in records.items()}
    if blueprint:
        for address in desired:
            deps[address] = set(blueprint.graph.dependencies.get(address, ()))
    return ResourceGraph(deps)


def _deletion_order(records: Mapping[str, ResourceRecord], desired: Mapping) -> list[str]:
    """Records to delete, dependents before what they depend on."""
    doomed = {a for a in records if a not in desired}
    graph = ResourceGraph({a: set(records[a].dependencies) & doomed for a in doomed})
    return list(reversed(graph.order()))

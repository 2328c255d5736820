"""The apply engine against the file-backed memory provider: order, journal, failures, taint,
parallelism bound, interruption, pending-entry resolution."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from provisioner.blueprint import Blueprint
from provisioner.engine import Applier, resolve_pending
from provisioner.events import Event
from provisioner.graph import ResourceGraph
from provisioner.plan import Action
from provisioner.planner import PlanOptions, make_plan
from provisioner.providers import Providers
from provisioner.providers.base import Owner, ProviderContext
from provisioner.resources import Resource
from provisioner.workspace import refresh_live, type_info
from state.document import PendingOperation
from state.local import LocalBackend
from state.session import StateSession


def blueprint_of(*resources: Resource) -> Blueprint:
    by_address = {r.address: r for r in resources}
    outputs = {"first": "${memory_resource.a.id}"} if "memory_resource.a" in by_address else {}
    return Blueprint(by_address, outputs,
                     ResourceGraph.from_resources(by_address.values(), source="test"))


def res(address: str, *, up: list[str] = (), **attrs) -> Resource:
    attributes = {"index": 0, "values": {}, "fail": None, "delay_s": 0,
                  "upstream": {u: f"${{{u}.id}}" for u in up}}
    attributes.update(attrs)
    return Resource(address=address, type="memory_resource", attributes=attributes)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.backend = LocalBackend(tmp_path / "state.json")
        self.tmp = tmp_path
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def providers(self, session) -> Providers:
        owner = Owner("test", session.document.lineage)
        return Providers(ProviderContext(owner, self.tmp, self.tmp))

    def plan(self, session, blueprint, **options):
        providers = self.providers(session)
        live = refresh_live(session.document, blueprint, providers, self.emit)
        return make_plan(blueprint=blueprint, document=session.document,
                         state_exists=session.version is not None, live=live,
                         type_info=type_info, options=PlanOptions(**options),
                         spec_path="test", variables={})

    def apply(self, blueprint, parallelism=10, stop=None, **options):
        with StateSession(self.backend, operation="apply") as session:
            plan = self.plan(session, blueprint, **options)
            applier = Applier(plan=plan, blueprint=None if plan.destroy else blueprint,
                              session=session, providers=self.providers(session),
                              emit=self.emit, parallelism=parallelism, stop=stop,
                              retry_wait=lambda attempt: 0.0)
            return plan, applier.run()

    def state(self):
        return self.backend.read().document

    def starts(self, type_: str = "apply_start") -> list[str]:
        return [e.address for e in self.events if e.type == type_]


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_apply_creates_in_dependency_order_and_records_everything(harness: Harness) -> None:
    blueprint = blueprint_of(res("memory_resource.a"), res("memory_resource.b", up=["memory_resource.a"]),
                             res("memory_resource.c", up=["memory_resource.b"]))
    plan, result = harness.apply(blueprint)
    assert plan.counts() == {"add": 3, "change": 0, "destroy": 0}
    assert not result.failures
    assert harness.starts() == ["memory_resource.a", "memory_resource.b", "memory_resource.c"]
    doc = harness.state()
    assert doc.pending == []
    assert set(doc.resources) == {"memory_resource.a", "memory_resource.b", "memory_resource.c"}
    b = doc.resources["memory_resource.b"]
    assert b.attributes["upstream"]["memory_resource.a"] == doc.resources["memory_resource.a"].id
    assert b.dependencies == ["memory_resource.a"]
    assert doc.outputs == {"first": doc.resources["memory_resource.a"].id}

    serial = doc.serial
    plan, result = harness.apply(blueprint)
    assert not plan.has_changes
    assert harness.state().serial == serial, "a no-op apply must not write the state"


def test_failed_change_taints_skips_dependents_and_finishes_independent_work(harness) -> None:
    good = blueprint_of(res("memory_resource.a"), res("memory_resource.b", up=["memory_resource.a"]),
                        res("memory_resource.c"))
    harness.apply(good)
    broken = blueprint_of(res("memory_resource.a", values={"v": 2}, fail="boom"),
                          res("memory_resource.b", up=["memory_resource.a"], values={"v": 2}),
                          res("memory_resource.c", values={"v": 2}),
                          res("memory_resource.d", up=["memory_resource.a"]))
    plan, result = harness.apply(broken)
    assert set(result.failures) == {"memory_resource.a"}
    assert "boom" in result.failures["memory_resource.a"]
    assert set(result.skipped) == {"memory_resource.b", "memory_resource.d"}
    assert "memory_resource.c" in result.completed
    doc = harness.state()
    assert doc.resources["memory_resource.a"].status == "tainted"
    assert doc.resources["memory_resource.c"].attributes["values"] == {"v": 2}
    assert "memory_resource.d" not in doc.resources
    assert doc.pending == []

    fixed = blueprint_of(res("memory_resource.a", values={"v": 2}),
                         res("memory_resource.b", up=["memory_resource.a"], values={"v": 2}),
                         res("memory_resource.c", values={"v": 2}),
                         res("memory_resource.d", up=["memory_resource.a"]))
    with StateSession(harness.backend, operation="plan") as session:
        actions = {c.address: c.action for c in harness.plan(session, fixed).changes}
    assert actions["memory_resource.a"] is Action.REPLACE


def test_failed_create_leaves_nothing_unrecorded(harness) -> None:
    plan, result = harness.apply(blueprint_of(res("memory_resource.x", fail="no capacity")))
    assert "no capacity" in result.failures["memory_resource.x"]
    doc = harness.state()
    assert doc.pending == [] and doc.resources == {}


def test_parallelism_bounds_concurrent_changes(harness) -> None:
    blueprint = blueprint_of(*[res(f"memory_resource.n{i}", delay_s=0.2) for i in range(8)])
    harness.apply(blueprint, parallelism=3)
    in_flight = peak = 0
    for event in harness.events:
        if event.type == "apply_start":
            in_flight += 1
            peak = max(peak, in_flight)
        elif event.type == "apply_complete":
            in_flight -= 1
    assert peak == 3


def test_destroy_deletes_dependents_first(harness) -> None:
    blueprint = blueprint_of(res("memory_resource.a"), res("memory_resource.b", up=["memory_resource.a"]))
    harness.apply(blueprint)
    harness.events.clear()
    plan, result = harness.apply(blueprint, destroy=True)
    assert not result.failures
    assert harness.starts() == ["memory_resource.b", "memory_resource.a"]
    doc = harness.state()
    assert doc.resources == {} and doc.outputs == {}


def test_stop_request_starts_no_new_change(harness) -> None:
    stop = threading.Event()
    stop.set()
    plan, result = harness.apply(blueprint_of(res("memory_resource.a")), stop=stop)
    assert result.interrupted
    assert result.skipped == ["memory_resource.a"]
    assert harness.state().resources == {} if harness.backend.read() else True


def test_pending_create_is_adopted_when_it_exists_and_cleared_when_not(harness) -> None:
    with StateSession(harness.backend, operation="apply") as session:
        providers = harness.providers(session)
        made = providers.get("memory_resource").create(
            "memory_resource.made", res("memory_resource.made").attributes, "tok-made")
        session.update(lambda doc: doc.pending.extend([
            PendingOperation(token="tok-made", address="memory_resource.made",
                             type="memory_resource", action="create"),
            PendingOperation(token="tok-lost", address="memory_resource.lost",
                             type="memory_resource", action="create"),
        ]))
        assert resolve_pending(session, providers, harness.emit) == 2
    doc = harness.state()
    assert doc.pending == []
    assert set(doc.resources) == {"memory_resource.made"}
    assert doc.resources["memory_resource.made"].id == made.id
    assert [e.type for e in harness.events].count("journal_resolved") == 2


def test_delete_waits_for_the_update_of_what_depended_on_it(harness) -> None:
    """Removing a node: the load balancer's update (dropping it) runs before the node's delete."""
    before = blueprint_of(res("memory_resource.a"), res("memory_resource.n1"),
                          res("memory_resource.lb", up=["memory_resource.n1", "memory_resource.a"]))
    harness.apply(before)
    harness.events.clear()
    after = blueprint_of(res("memory_resource.a"),
                         res("memory_resource.lb", up=["memory_resource.a"]))
    plan, result = harness.apply(after)
    assert {c.address: c.action for c in plan.actionable()} == {
        "memory_resource.lb": Action.UPDATE, "memory_resource.n1": Action.DELETE}
    assert harness.starts() == ["memory_resource.lb", "memory_resource.n1"]
    assert not result.failures

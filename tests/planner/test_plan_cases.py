"""The planner, one JSON case per file in cases/: desired resources, recorded state, optional live
view, options -> expected actions, paths, drift and order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.blueprint import Blueprint
from provisioner.graph import ResourceGraph
from provisioner.planner import PlanOptions, TypeInfo, make_plan
from provisioner.providers.base import LiveResource
from provisioner.resources import Resource
from state.document import ResourceRecord, StateDocument

CASES = sorted((Path(__file__).parent / "cases").glob("*.json"))
TYPES = {"memory_resource": TypeInfo(force_new=frozenset({"index"}), computed=frozenset({"id"}))}


def build(case: dict):
    resources = {
        item["address"]: Resource(type=item["address"].split(".")[0], **item)
        for item in case["desired"]
    }
    blueprint = Blueprint(
        resources=resources,
        outputs={},
        graph=ResourceGraph.from_resources(resources.values(), source="case"),
        sensitive_values=case.get("secrets", []),
    )
    document = StateDocument.new()
    for address, record in case["state"].items():
        document.resources[address] = ResourceRecord(**record)
    live = None
    if "live" in case:
        live = {a: LiveResource(a, r["id"], r["attributes"]) for a, r in case["live"].items()}
        for address, record in document.resources.items():  # unchanged unless the case says
            if address not in case["live"] and case["live"]:
                live[address] = LiveResource(address, record.id, record.attributes)
    return make_plan(
        blueprint=blueprint,
        document=document,
        state_exists=bool(case["state"]),
        live=live,
        type_info=lambda name: TYPES[name],
        options=PlanOptions(**case.get("options", {})),
        spec_path="cluster.yaml",
        variables={},
    )


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case = json.loads(path.read_text())
    plan = build(case)
    changes = {c.address: c for c in plan.changes}
    assert {a: c.action.value for a, c in changes.items()} == case["expect"]
    for address, paths in case.get("expect_unknown", {}).items():
        assert changes[address].after_unknown == paths
    for address, paths in case.get("expect_changed", {}).items():
        assert changes[address].changed_paths == paths
    for address, paths in case.get("expect_replace_paths", {}).items():
        assert changes[address].replace_paths == paths
    for address, fragment in case.get("expect_reason", {}).items():
        assert fragment in (changes[address].reason or "")
    for address, kind in case.get("expect_drift", {}).items():
        assert {d.address: d.kind for d in plan.drift}[address] == kind
    if "expect_order" in case:
        order = [c.address for c in plan.changes]
        assert [a for a in order if a in case["expect_order"]] == case["expect_order"]
    if "expect_counts" in case:
        assert plan.counts() == case["expect_counts"]
    for address in case.get("expect_absent", []):
        assert address not in changes
    if "expect_not_in_plan" in case:
        assert case["expect_not_in_plan"] not in plan.model_dump_json()

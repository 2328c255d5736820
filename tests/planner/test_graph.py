"""Graph order, cycles and unknown references; reference resolution."""

from __future__ import annotations

import pytest

from provisioner.errors import GraphError
from provisioner.graph import ResourceGraph
from provisioner.resources import UNKNOWN, Resource, Unresolved, resolve, resolve_partially


def res(address: str, **attributes) -> Resource:
    return Resource(address=address, type=address.split(".")[0], attributes=attributes)


def test_order_puts_dependencies_first_and_is_stable() -> None:
    graph = ResourceGraph.from_resources(
        [res("t.c", up="${t.b.id}"), res("t.b", up="${t.a.id}"), res("t.a"), res("t.z")],
        source="m",
    )
    assert graph.order() == ["t.a", "t.z", "t.b", "t.c"]
    assert graph.transitive_dependents("t.a") == {"t.b", "t.c"}
    assert graph.transitive_dependencies("t.c") == {"t.a", "t.b"}


def test_cycle_is_reported_with_its_members() -> None:
    with pytest.raises(GraphError) as caught:
        ResourceGraph.from_resources(
            [res("t.a", up="${t.c.id}"), res("t.b", up="${t.a.id}"), res("t.c", up="${t.b.id}")],
            source="m",
        )
    message = str(caught.value)
    assert "dependency cycle" in message
    assert all(name in message for name in ("t.a", "t.b", "t.c"))


def test_unknown_reference_names_resource_and_attribute_path() -> None:
    with pytest.raises(GraphError) as caught:
        ResourceGraph.from_resources(
            [res("t.head"), res("t.app", cfg={"url": "${t.haed.url}"})], source="mod.j2"
        )
    error = caught.value
    assert error.source == "mod.j2"
    assert error.path == "t.app.cfg.url"
    assert "t.haed" in str(error)
    assert error.hint == "did you mean t.head?"


def test_indexed_addresses_are_references() -> None:
    graph = ResourceGraph.from_resources(
        [res("t.n[0]"), res("t.n[1]"), res("t.lb", a="${t.n[0].ip}", b="${t.n[1].ip}")],
        source="m",
    )
    assert graph.dependencies["t.lb"] == {"t.n[0]", "t.n[1]"}


def test_resolve_keeps_types_and_formats_inside_strings() -> None:
    values = {"t.a": {"port": 8265, "host": "10.0.0.1"}}
    lookup = lambda address, attribute: values[address][attribute]  # noqa: E731
    assert resolve({"p": "${t.a.port}"}, lookup) == {"p": 8265}
    assert resolve(["http://${t.a.host}:${t.a.port}"], lookup) == ["http://10.0.0.1:8265"]


def test_resolve_partially_marks_unknown_paths() -> None:
    def lookup(address, attribute):
        raise Unresolved(address)

    value, unknown = resolve_partially({"a": {"b": "${t.x.id}"}, "c": 1}, lookup)
    assert value == {"a": {"b": UNKNOWN}, "c": 1}
    assert unknown == {"a.b"}

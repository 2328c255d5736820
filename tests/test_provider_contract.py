"""Every registered resource type implements the whole contract of providers/base.py."""

from __future__ import annotations

import inspect

import pytest

from provisioner.providers import RESOURCE_TYPES, resource_type_class
from provisioner.providers.base import ResourceType

REQUIRED = ("list", "create", "update", "delete")


@pytest.mark.parametrize("type_name", sorted(RESOURCE_TYPES))
def test_type_implements_contract(type_name: str) -> None:
    cls = resource_type_class(type_name)
    assert issubclass(cls, ResourceType)
    assert cls.type_name == type_name
    assert not inspect.isabstract(cls), f"{cls} leaves abstract methods"
    for name in REQUIRED:
        method = getattr(cls, name)
        assert method is not getattr(ResourceType, name)
        base = inspect.signature(getattr(ResourceType, name))
        assert list(inspect.signature(method).parameters) == list(base.parameters), name
    for attr in ("force_new", "computed", "ignore_drift"):
        assert isinstance(getattr(cls, attr), frozenset), attr
    assert not (cls.force_new & cls.computed), "an attribute cannot be both desired and computed"
    assert "providers.base" in (inspect.getmodule(cls).__doc__ or "") + (cls.__doc__ or ""), (
        "implementations point to the contract instead of repeating it"
    )


def test_unknown_type_is_a_clear_error() -> None:
    from provisioner.errors import SpecError

    with pytest.raises(SpecError, match="unknown resource type 'nope'"):
        resource_type_class("nope")

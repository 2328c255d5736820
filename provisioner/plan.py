"""The plan: pure data that alone decides what apply does.

Saved plans carry the lineage and serial of the state they were made from (a stale plan is
refused), the variables (sensitive ones as digests only), and per change a digest of the desired
attributes, so apply can prove that the spec it re-reads is the one that was planned without the
plan file ever holding a secret.
"""

from __future__ import annotations

import hashlib
import json
import os
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioner.errors import PlanError

PLAN_FORMAT = 1


class Action(str, Enum):
    NOOP = "no-op"
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"


class ResourceChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    type: str
    action: Action
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    after_unknown: list[str] = Field(default_factory=list)
    changed_paths: list[str] = Field(default_factory=list)
    replace_paths: list[str] = Field(default_factory=list)
    reason: str | None = None
    dependencies: list[str] = Field(default_factory=list)
    create_before_destroy: bool = False
    desired_digest: str | None = None
    # A delete that only removes the record: the resource's machine does not answer (recover).
    forget: bool = False

    @property
    def terraform_actions(self) -> list[str]:
        if self.action is Action.REPLACE:
            return ["create", "delete"] if self.create_before_destroy else ["delete", "create"]
        return [self.action.value]


class Drift(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    type: str
    kind: str  # "deleted" | "changed"
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    changed_paths: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = PLAN_FORMAT
    created_at: str
    spec_path: str
    lineage: str | None
    serial: int
    destroy: bool = False
    refreshed: bool = True
    targets: list[str] = Field(default_factory=list)
    variables: dict[str, Any] = Field(default_factory=dict)
    changes: list[ResourceChange] = Field(default_factory=list)
    drift: list[Drift] = Field(default_factory=list)
    outputs: dict[str, Any] = Field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        add = sum(c.action in (Action.CREATE, Action.REPLACE) for c in self.changes)
        change = sum(c.action is Action.UPDATE for c in self.changes)
        destroy = sum(c.action in (Action.DELETE, Action.REPLACE) for c in self.changes)
        return {"add": add, "change": change, "destroy": destroy}

    @property
    def has_changes(self) -> bool:
        return any(c.action is not Action.NOOP for c in self.changes)

    def actionable(self) -> list[ResourceChange]:
        return [c for c in self.changes if c.action is not Action.NOOP]


def digest(value: Any) -> str:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()


def save_plan(plan: Plan, path: Path) -> None:
    """Write the plan owner-only and atomically (a plan names infrastructure)."""
    data = plan.model_dump_json(indent=1).encode()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_plan(path: Path) -> Plan:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PlanError(f"cannot read plan file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
        if data.get("format") != PLAN_FORMAT:
            raise PlanError(
                f"{path} is a plan of format {data.get('format')!r}; this provisioner reads "
                f"format {PLAN_FORMAT}",
                hint="make the plan again with this version",
            )
        return Plan.model_validate(data)
    except (ValueError, AttributeError, ValidationError) as exc:
        raise PlanError(
            f"{path} is not a provisioner plan file ({str(exc).splitlines()[0]})",
            hint="make one with: provisioner plan --out FILE",
        ) from None


def check_fresh(plan: Plan, lineage: str | None, serial: int, state_desc: str) -> None:
    """Refuse a plan made from another state, or from this state before it changed."""
    if plan.lineage is not None and lineage is not None and plan.lineage != lineage:
        raise PlanError(
            f"the plan was made for state lineage {plan.lineage}, but {state_desc} has "
            f"lineage {lineage}",
            hint="this plan belongs to another deployment; run plan again here",
        )
    if plan.serial != serial or (plan.lineage is None and lineage is not None):
        raise PlanError(
            f"the plan is stale: it was made from state serial {plan.serial}, "
            f"and {state_desc} is now at serial {serial}",
            hint="the state changed since the plan was made; run plan again",
        )

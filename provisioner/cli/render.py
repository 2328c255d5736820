"""Human renderings of plans and state, in Terraform's manner (+, ~, -/+, -)."""

from __future__ import annotations

import json
from typing import Any

from provisioner.plan import Action, Plan, ResourceChange
from provisioner.values import SENSITIVE_PREFIX, flatten
from provisioner.resources import UNKNOWN

SYMBOLS = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.DELETE: "-",
    Action.NOOP: " ",
}
VERBS = {
    Action.CREATE: "will be created",
    Action.UPDATE: "will be updated in-place",
    Action.DELETE: "will be destroyed",
    Action.REPLACE: "must be replaced",
}


def render_plan(plan: Plan) -> str:
    lines: list[str] = []
    if plan.drift:
        lines.append("Changes outside provisioner since the last apply:")
        lines.append("")
        for drift in plan.drift:
            if drift.kind == "deleted":
                lines.append(f"  # {drift.address} has been deleted")
            else:
                lines.append(f"  # {drift.address} has changed")
                for path in drift.changed_paths:
                    before = _get(drift.before, path)
                    after = _get(drift.after, path)
                    lines.append(f"      ~ {path} = {_fmt(before)} -> {_fmt(after)}")
        lines.append("")
    actionable = plan.actionable()
    if not actionable:
        lines.append("No changes. The infrastructure matches the spec.")
        return "\n".join(lines)
    lines.append("provisioner will perform the following actions:")
    lines.append("")
    for change in actionable:
        lines.extend(_render_change(change))
        lines.append("")
    counts = plan.counts()
    lines.append(
        f"Plan: {counts['add']} to add, {counts['change']} to change, "
        f"{counts['destroy']} to destroy."
    )
    return "\n".join(lines)


def _render_change(change: ResourceChange) -> list[str]:
    kind, _, name = change.address.partition(".")
    head = f"  # {change.address} {VERBS[change.action]}"
    if change.reason and change.action is not Action.UPDATE:
        head += f" ({change.reason})"
    symbol = "-/+" if change.action is Action.REPLACE else SYMBOLS[change.action]
    if change.action is Action.REPLACE and change.create_before_destroy:
        symbol = "+/-"
    lines = [head, f"{symbol} resource \"{kind}\" \"{name}\" {{"]
    before = flatten(change.before) if change.before else {}
    after = flatten(change.after) if change.after else {}
    if change.action is Action.CREATE:
        rows = [("+", p, None, after[p]) for p in sorted(after)]
    elif change.action is Action.DELETE:
        rows = [("-", p, before[p], None) for p in sorted(before)]
    else:
        changed = set(change.changed_paths) | set(change.after_unknown)
        rows = []
        for path in sorted(changed):
            mark = "~"
            if path not in before:
                mark = "+"
            elif path not in after:
                mark = "-"
            rows.append((mark, path, before.get(path), after.get(path)))
    width = max((len(p) for _, p, _, _ in rows), default=0)
    replace_paths = set(change.replace_paths)
    for mark, path, old, new in rows:
        note = "  # forces replacement" if path in replace_paths else ""
        if mark == "~":
            value = f"{_fmt(old)} -> {_fmt(new)}"
        else:
            value = _fmt(new if mark == "+" else old)
        lines.append(f"    {mark} {path.ljust(width)} = {value}{note}")
    unchanged = len(after) - len([r for r in rows if r[0] != "-"])
    if change.action in (Action.UPDATE, Action.REPLACE) and unchanged > 0:
        lines.append(f"      # ({unchanged} unchanged attributes hidden)")
    lines.append("  }")
    return lines


def _get(value: dict[str, Any] | None, path: str) -> Any:
    return flatten(value).get(path) if value else None


def _fmt(value: Any) -> str:
    if value == UNKNOWN:
        return UNKNOWN
    if isinstance(value, str) and value.startswith(SENSITIVE_PREFIX):
        return "(sensitive value)"
    return json.dumps(value, sort_keys=True)

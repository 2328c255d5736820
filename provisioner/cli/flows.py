"""The steps the commands share: plan under the lock, approve, apply, and the read-only views."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from provisioner.errors import ApplyFailed, NotApproved, ProvisionerError
from provisioner.events import make_event
from provisioner.plan import Action, Plan


def make_plan(run, workspace, session, *, destroy: bool, targets, replace, refresh: bool) -> Plan:
    from provisioner.engine import resolve_pending
    from provisioner.planner import PlanOptions

    providers = workspace.providers(session.document)
    resolve_pending(session, providers, run.view, workspace.desired_attributes())
    run.view(make_event("plan_start", "Planning..." if not destroy else "Planning destroy..."))
    options = PlanOptions(destroy=destroy, targets=list(targets or []),
                          replace=list(replace or []))
    return workspace.plan(session.document, session.version is not None, providers, options, refresh=refresh)


def show_plan(run, plan: Plan) -> None:
    if run.json:
        for drift in plan.drift:
            run.view(make_event("resource_drift", f"{drift.address}: {drift.kind} outside "
                                "provisioner", address=drift.address,
                                data={"changed_paths": drift.changed_paths}))
        for change in plan.actionable():
            run.view(make_event("planned_change", f"{change.address}: plan to "
                                f"{change.action.value}", address=change.address,
                                action=change.action.value,
                                data={"reason": change.reason,
                                      "changed_paths": change.changed_paths}))
        counts = plan.counts()
        run.view(make_event("change_summary", "Plan: {add} to add, {change} to change, "
                            "{destroy} to destroy.".format(**counts), data=counts))
        return
    from provisioner.cli.render import render_plan

    run.view.text(render_plan(plan))


def approve(run, what: str, auto_approve: bool) -> None:
    if auto_approve:
        return
    if run.json or not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise NotApproved(
            f"{what} needs approval and there is no terminal to ask on",
            hint="review the plan, then run again with --auto-approve (or apply a saved plan)",
        )
    import typer

    answer = typer.prompt(f"\nDo you want to {what}? Only 'yes' will be accepted to approve")
    if answer.strip() != "yes":
        raise NotApproved(f"{what} cancelled")


def plan_and_apply(run, workspace, *, auto_approve: bool, destroy: bool, targets, replace,
                   refresh: bool, parallelism: int, lock_timeout: str) -> None:
    operation = "destroy" if destroy else "apply"
    with run.session(workspace.backend(), operation, lock_timeout) as session:
        plan = make_plan(run, workspace, session, destroy=destroy, targets=targets,
                         replace=replace, refresh=refresh)
        show_plan(run, plan)
        if plan.has_changes:
            approve(run, "destroy these resources" if destroy else "perform these actions",
                    auto_approve)
        execute(run, workspace, session, plan, parallelism)


def apply_saved(run, planfile: Path, parallelism: int, lock_timeout: str) -> None:
    from provisioner.engine import resolve_pending
    from provisioner.plan import load_plan

    plan = load_plan(planfile)
    workspace = run.workspace(Path(plan.spec_path), plan.variables)
    with run.session(workspace.backend(), "apply", lock_timeout) as session:
        resolve_pending(session, workspace.providers(session.document), run.view,
                        workspace.desired_attributes())
        workspace.check_saved_plan(plan, session.document, session.version is not None,
                                   workspace.backend().describe())
        execute(run, workspace, session, plan, parallelism)


def execute(run, workspace, session, plan: Plan, parallelism: int) -> None:
    from provisioner.engine import Applier
    from provisioner.workspace import install_stop_handlers

    stop = threading.Event()
    install_stop_handlers(stop, run.view)
    blueprint = None if plan.destroy else workspace.blueprint
    providers = workspace.providers(session.document)
    providers.ctx.destroying = plan.destroy
    applier = Applier(plan=plan, blueprint=blueprint, session=session, providers=providers,
                      emit=run.view,
                      parallelism=parallelism, stop=stop)
    try:
        result = applier.run()
    finally:
        run.view.close()
    counts = plan.counts()
    if result.failures or result.interrupted:
        lines = [f"  {address}: {message}" for address, message in result.failures.items()]
        if result.skipped:
            lines.append(f"  skipped: {', '.join(sorted(result.skipped))}")
        run.view(make_event("apply_summary", "Apply failed:\n" + "\n".join(lines),
                            level="error", elapsed_s=round(result.elapsed_s, 3),
                            data={"failures": result.failures, "skipped": result.skipped,
                                  "interrupted": result.interrupted}))
        raise ApplyFailed(result.failures, interrupted=result.interrupted)
    if not plan.destroy:
        write_checkpoint(run, workspace, session, plan)
    verb = "Destroy" if plan.destroy else "Apply"
    message = (f"{verb} complete! Resources: {counts['add']} added, {counts['change']} changed,"
               f" {counts['destroy']} destroyed.")
    run.view(make_event("apply_summary", message, elapsed_s=round(result.elapsed_s, 3),
                        data=counts))
    if result.outputs:
        run.view(make_event("outputs", "Outputs:\n" + _format_outputs(result.outputs),
                            data=result.outputs))


def write_checkpoint(run, workspace, session, plan: Plan) -> None:
    """After an apply that changed the Serve applications: a checkpoint of them, for recover.
    A checkpoint that cannot be written fails the command (exit 1) after the apply is recorded:
    a pipeline must not believe it can recover what it cannot."""
    from provisioner.checkpoint.capture import checkpoint_if_changed
    from provisioner.checkpoint.stores import CheckpointError

    if workspace.loaded.spec.serve is None:
        return
    store = workspace.checkpoint_store()
    apps_changed = any(change.type == "serve_app" and change.action is not Action.NOOP
                       for change in plan.changes)
    try:
        written = checkpoint_if_changed(session.document, store, workspace.data_dir / "packages",
                                        workspace.name, apps_changed)
    except CheckpointError as error:
        error.message = f"apply complete, but no checkpoint was written: {error.message}"
        error.args = (error.message,)
        raise
    if written is None:
        return
    checkpoint, digest = written
    record = {"id": checkpoint.id, "store": store.uri, "manifest_digest": digest,
              "serial": checkpoint.serial, "created_at": checkpoint.created_at}
    session.update(lambda document: document.history.__setitem__("checkpoint", record))
    run.view(make_event("checkpoint_written", f"Checkpoint {checkpoint.id} written to "
                        f"{store.uri} ({len(checkpoint.apps)} app(s))", data=record))


def _format_outputs(outputs: dict[str, Any]) -> str:
    return "\n".join(f"  {name} = {json.dumps(value)}" for name, value in sorted(outputs.items()))


def _read_state(workspace):
    snapshot = workspace.backend().read()
    return snapshot.document if snapshot else None


def show_saved_plan(run, plan: Plan) -> None:
    if run.json:
        from provisioner.plan_json import plan_to_json

        print(json.dumps(plan_to_json(plan), indent=2, sort_keys=True))
        return
    from provisioner.cli.render import render_plan

    run.view.text(render_plan(plan))


def show_state(run, workspace) -> None:
    document = _read_state(workspace)
    if run.json:
        print(json.dumps(document.model_dump(mode="json") if document else None, indent=2,
                         sort_keys=True))
        return
    if document is None or not document.resources:
        run.view.text("The state is empty.")
        return
    for address, record in sorted(document.resources.items()):
        run.view.text(_format_record(address, record))
    if document.outputs:
        run.view.text("Outputs:\n" + _format_outputs(document.outputs))


def _format_record(address: str, record) -> str:
    from provisioner.cli.render import _fmt
    from provisioner.values import flatten

    tainted = " (tainted)" if record.status == "tainted" else ""
    lines = [f"# {address}{tainted}", f"  id = {json.dumps(record.id)}"]
    for path, value in sorted(flatten(record.attributes).items()):
        lines.append(f"  {path} = {_fmt(value)}")
    return "\n".join(lines)


def show_outputs(run, workspace, name: str | None) -> None:
    document = _read_state(workspace)
    outputs = document.outputs if document else {}
    if name is not None:
        if name not in outputs:
            raise ProvisionerError(
                f"no output named '{name}'",
                hint=("outputs: " + ", ".join(sorted(outputs))) if outputs else
                "the state has no outputs yet; run apply first",
            )
        value = outputs[name]
        print(json.dumps(value) if run.json or not isinstance(value, str) else value)
        return
    if run.json:
        print(json.dumps(outputs, indent=2, sort_keys=True))
    else:
        run.view.text(_format_outputs(outputs) if outputs else "No outputs.")


def state_list(run, workspace) -> None:
    document = _read_state(workspace)
    addresses = sorted(document.resources) if document else []
    if run.json:
        print(json.dumps(addresses))
    else:
        for address in addresses:
            run.view.text(address)


def state_show(run, workspace, address: str) -> None:
    document = _read_state(workspace)
    record = document.resources.get(address) if document else None
    if record is None:
        raise ProvisionerError(f"no resource {address} in the state",
                               hint="list them with: provisioner state list")
    if run.json:
        print(json.dumps({"address": address, **record.model_dump(mode="json")}, indent=2,
                         sort_keys=True))
    else:
        run.view.text(_format_record(address, record))


def show_status(run, workspace) -> None:
    from provisioner.providers.base import LiveResource

    document = _read_state(workspace)
    if document is None or not document.resources:
        run.view.text("Nothing deployed (the state is empty).")
        if run.json:
            print(json.dumps({"resources": {}}))
        return
    providers = workspace.providers(document)
    report: dict[str, Any] = {}
    for address, record in sorted(document.resources.items()):
        live = LiveResource(address, record.id, dict(record.attributes), record.token)
        try:
            facts = providers.get(record.type).status(live)
        except ProvisionerError as error:
            facts = {"error": str(error)}
        report[address] = {"type": record.type, "recorded": record.status, **facts}
    if run.json:
        print(json.dumps({"resources": report}, indent=2, sort_keys=True))
        return
    for address, facts in report.items():
        run.view.text(f"{address} ({facts.pop('type')}, recorded {facts.pop('recorded')})")
        for key, value in facts.items():
            run.view.text(f"  {key}: {json.dumps(value, sort_keys=True)}")

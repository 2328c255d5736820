"""The ``recover`` and ``checkpoint`` commands' steps (see ``provisioner.recover``)."""

from __future__ import annotations

import json
import time
from typing import Any

from provisioner.events import make_event

MAX_RECOVERIES_KEPT = 20


def recover(run, workspace, *, checkpoint_id: str | None, auto_approve: bool, parallelism: int,
            lock_timeout: str, started: float) -> None:
    from provisioner import recover as rc
    from provisioner.checkpoint.layout import load_checkpoint, restore_manifest
    from provisioner.cli import flows
    from provisioner.engine import resolve_pending
    from provisioner.planner import PlanOptions

    with run.session(workspace.backend(), "recover", lock_timeout) as session:
        document = session.document
        providers = workspace.providers(document)
        resolve_pending(session, providers, run.view, workspace.desired_attributes())
        document = session.document
        run.view(make_event("recover_probe", "Probing the head..."))
        probe = rc.probe_head(document, providers)
        if probe.healthy:
            run.view(make_event("recover_healthy", f"{probe.address} is healthy: nothing to "
                                "recover, nothing changed.", address=probe.address,
                                data={"healthy": True}))
            return
        run.view(make_event("head_lost", f"{probe.address} is lost: {probe.lost}",
                            address=probe.address, level="warn", data={"reason": probe.lost}))

        # The checkpoint first: without a usable one nothing may change (exit 4). A cluster
        # without Serve applications has none to restore: only its head is replaced.
        checkpoint = None
        if workspace.loaded.spec.serve is not None:
            store = workspace.checkpoint_store()
            checkpoint, manifest = load_checkpoint(store, checkpoint_id, document.lineage)
            manifest_path = restore_manifest(store, checkpoint, manifest,
                                             workspace.data_dir / "restored" / checkpoint.id)
            run.view(make_event("checkpoint_loaded", f"Checkpoint {checkpoint.id} (state "
                                f"serial {checkpoint.serial}): {', '.join(checkpoint.apps)}",
                                data={"id": checkpoint.id, "apps": checkpoint.apps}))
            workspace.use_manifest(manifest_path)

        placement = rc.place_head(document, workspace.loaded.spec.cluster, probe)
        if placement.moved:
            run.view(make_event("head_moved", f"The head's machine does not answer: the head "
                                f"moves to the standby host {placement.host}",
                                data={"host": placement.host}))
        lost, held = rc.lost_and_held(document, probe, placement)
        spec_head = getattr(workspace.loaded.spec.cluster, "head", None)
        placed = placement.record(spec_head)

        def mark(doc) -> None:  # the recovery's decisions, in the state before anything runs
            doc.resources[probe.address] = doc.resources[probe.address].model_copy(
                update={"status": "tainted"})
            doc.history["placement"] = placed

        planning = document.successor()
        mark(planning)
        run.view(make_event("plan_start", "Planning the recovery..."))
        plan = workspace.plan(planning, True, providers, PlanOptions(hold=held), lost=lost)
        flows.show_plan(run, plan)
        flows.approve(run, "recover the cluster", auto_approve)
        session.update(mark)
        flows.execute(run, workspace, session, plan, parallelism)

        base_url = session.document.outputs.get("lb_url") or session.document.outputs.get(
            "serve_url")
        routes = rc.app_routes(session.document)
        statuses: dict[str, int] = {}
        if base_url and routes:
            run.view(make_event("recover_verify", f"Checking every route through {base_url}..."))
            statuses = rc.verify_routes(base_url, routes, lambda message: run.view(
                make_event("apply_progress", message)))
        seconds = round(time.monotonic() - started, 3)
        record = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": seconds,
                  "checkpoint": checkpoint.id if checkpoint else None, "head": placement.host or probe.address,
                  "reason": probe.lost, "routes": statuses}
        session.update(lambda doc: doc.history.__setitem__(
            "recoveries", [*(doc.history.get("recoveries") or []), record][-MAX_RECOVERIES_KEPT:]))
        run.view(make_event("recover_complete", f"Recovered in {seconds:.1f}s: every route "
                            f"answers through {base_url}." if statuses else
                            f"Recovered in {seconds:.1f}s.", elapsed_s=seconds, data=record))


def checkpoint_list(run, workspace) -> None:
    from provisioner.checkpoint.layout import latest_id, list_checkpoints

    store = workspace.checkpoint_store()
    found = list_checkpoints(store)
    latest = latest_id(store) if found else None
    rows: list[dict[str, Any]] = []
    for item in found:
        if isinstance(item, str):
            rows.append({"id": item, "corrupt": True, "latest": item == latest})
        else:
            rows.append({"id": item.id, "serial": item.serial, "created_at": item.created_at,
                         "apps": item.apps, "lineage": item.lineage,
                         "latest": item.id == latest})
    if run.json:
        print(json.dumps({"store": store.uri, "checkpoints": rows}, indent=2, sort_keys=True))
        return
    if not rows:
        run.view.text(f"No checkpoint in {store.uri}.")
        return
    run.view.text(f"Checkpoints in {store.uri}:")
    for row in rows:
        mark = " (latest)" if row["latest"] else ""
        if row.get("corrupt"):
            run.view.text(f"  {row['id']}{mark}  CORRUPT (unreadable checkpoint.json)")
        else:
            run.view.text(f"  {row['id']}{mark}  serial {row['serial']}  {row['created_at']}  "
                          f"apps: {', '.join(row['apps'])}")


def checkpoint_show(run, workspace, checkpoint_id: str) -> None:
    from dataclasses import asdict

    import yaml

    from provisioner.checkpoint.layout import load_checkpoint

    checkpoint, manifest = load_checkpoint(workspace.checkpoint_store(), checkpoint_id, None)
    if run.json:
        print(json.dumps({**asdict(checkpoint), "manifest": manifest}, indent=2, sort_keys=True))
        return
    run.view.text(f"Checkpoint {checkpoint.id} (lineage {checkpoint.lineage}, state serial "
                  f"{checkpoint.serial}, {checkpoint.created_at})")
    run.view.text(yaml.safe_dump(manifest, sort_keys=True).rstrip())

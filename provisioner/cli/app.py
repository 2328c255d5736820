"""Commands of the ``provisioner`` CLI. Each command parses flags, calls the workspace and the
engine, and hands their data and events to a view. Errors propagate to ``provisioner.cli.main``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="provisioner",
    help="Plan, apply, recover and destroy Ray Serve clusters, Terraform-style.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
state_app = typer.Typer(help="Inspect the state.", no_args_is_help=True)
app.add_typer(state_app, name="state")
checkpoint_app = typer.Typer(help="Inspect the checkpoints recover uses.", no_args_is_help=True)
app.add_typer(checkpoint_app, name="checkpoint")

_MODE = {"json": False}

SpecFile = Annotated[Path, typer.Option("--file", "-f", help="The spec file.")]
# --var / --var-file are declared for --help and validation; their values are read from argv in
# command-line order (later wins), which typer's separate lists would lose.
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON lines).")]
VarOpt = Annotated[Optional[list[str]], typer.Option("--var", help="Set a variable: NAME=VALUE.")]
VarFileOpt = Annotated[
    Optional[list[Path]], typer.Option("--var-file", help="Variables from a YAML or JSON file.")
]
TargetOpt = Annotated[
    Optional[list[str]], typer.Option("--target", help="Limit to this address and its dependencies.")
]
ReplaceOpt = Annotated[Optional[list[str]], typer.Option("--replace", help="Force replacing ADDR.")]
RefreshOpt = Annotated[
    bool, typer.Option("--refresh/--no-refresh", help="Read live resources before planning.")
]
LockTimeout = Annotated[
    str, typer.Option("--lock-timeout", help="How long to wait for the state lock, e.g. 30s.")
]
Parallelism = Annotated[int, typer.Option("--parallelism", min=1, help="Concurrent changes.")]
AutoApprove = Annotated[bool, typer.Option("--auto-approve", help="Apply without asking.")]
DetailedExit = Annotated[
    bool, typer.Option("--detailed-exitcode", help="Exit 0 no changes, 1 error, 2 changes.")
]

DEFAULT_SPEC = Path("cluster.yaml")


def report_error(message: str, hint: str | None) -> None:
    if _MODE["json"]:
        from provisioner.events import make_event

        data = {"hint": hint} if hint else None
        print(make_event("diagnostic", message, level="error", data=data)
              .model_dump_json(exclude_none=True), flush=True)
        return
    text = f"Error: {message}"
    if hint:
        text += f"\n  {hint}"
    print(text, file=sys.stderr, flush=True)


class Run:
    """What one command invocation shares: the view, the workspace and the flags."""

    def __init__(self, json_mode: bool) -> None:
        from provisioner.cli.views import make_view

        _MODE["json"] = json_mode
        self.json = json_mode
        self.view = make_view(json_mode)

    def workspace(self, spec_file: Path, plan_variables: dict | None = None):
        from provisioner.spec import var_order_from_argv
        from provisioner.workspace import VarArgs, Workspace

        return Workspace(_resolve_spec(spec_file), VarArgs(var_order_from_argv(sys.argv[1:])),
                         self.view, plan_variables)

    def state_location(self, spec_file: Path):
        from provisioner.workspace import StateLocation

        from provisioner.spec import var_order_from_argv

        return StateLocation.of(_resolve_spec(spec_file), self.view,
                                var_order_from_argv(sys.argv[1:]))

    def session(self, backend, operation: str, lock_timeout: str):
        from provisioner.cli.options import parse_duration
        from provisioner.events import make_event
        from state.session import StateSession

        def on_wait(info) -> None:
            self.view(make_event("lock_wait", f"waiting for the state lock: {info.describe()}",
                                 level="warn"))

        return StateSession(backend, operation=operation,
                            lock_timeout=parse_duration(lock_timeout, "--lock-timeout"),
                            on_wait=on_wait)


def _resolve_spec(spec_file: Path) -> Path:
    return spec_file if spec_file.is_absolute() else Path.cwd() / spec_file


@app.command()
def validate(file: SpecFile = DEFAULT_SPEC, json_mode: JsonFlag = False,
             var: VarOpt = None, var_file: VarFileOpt = None) -> None:
    """Check the spec, its variables, the Serve manifest and the resource graph."""
    from provisioner.events import make_event

    run = Run(json_mode)
    workspace = run.workspace(file)
    count = len(workspace.blueprint.resources)
    run.view(make_event("validated", f"The spec is valid: {count} resource(s).",
                        data={"valid": True, "resources": count}))


@app.command()
def plan(
    file: SpecFile = DEFAULT_SPEC,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the plan to a file.")] = None,
    destroy: Annotated[bool, typer.Option("--destroy", help="Plan to destroy everything.")] = False,
    detailed_exitcode: DetailedExit = False,
    json_mode: JsonFlag = False,
    var: VarOpt = None,
    var_file: VarFileOpt = None,
    target: TargetOpt = None,
    replace: ReplaceOpt = None,
    refresh: RefreshOpt = True,
    lock_timeout: LockTimeout = "0s",
) -> None:
    """Show what apply would change."""
    from provisioner.cli import flows
    from provisioner.cli.exits import CHANGES, OK
    from provisioner.plan import save_plan

    run = Run(json_mode)
    workspace = run.workspace(file)
    with run.session(workspace.backend(), "plan", lock_timeout) as session:
        made = flows.make_plan(run, workspace, session, destroy=destroy, targets=target,
                               replace=replace, refresh=refresh)
    flows.show_plan(run, made)
    if out is not None:
        save_plan(made, out)
        run.view.text(f"\nSaved the plan to {out}. Apply it with: provisioner apply {out}")
    raise typer.Exit(CHANGES if detailed_exitcode and made.has_changes else OK)


@app.command()
def apply(
    planfile: Annotated[Optional[Path], typer.Argument(help="A plan saved with plan --out.")] = None,
    file: SpecFile = DEFAULT_SPEC,
    auto_approve: AutoApprove = False,
    json_mode: JsonFlag = False,
    var: VarOpt = None,
    var_file: VarFileOpt = None,
    target: TargetOpt = None,
    replace: ReplaceOpt = None,
    refresh: RefreshOpt = True,
    parallelism: Parallelism = 10,
    lock_timeout: LockTimeout = "0s",
) -> None:
    """Make the infrastructure match the spec (or execute a saved plan)."""
    from provisioner.cli import flows

    run = Run(json_mode)
    if planfile is not None:
        flows.apply_saved(run, planfile, parallelism, lock_timeout)
        return
    flows.plan_and_apply(run, run.workspace(file), auto_approve=auto_approve, destroy=False,
                         targets=target, replace=replace, refresh=refresh,
                         parallelism=parallelism, lock_timeout=lock_timeout)


@app.command()
def destroy(
    file: SpecFile = DEFAULT_SPEC,
    auto_approve: AutoApprove = False,
    json_mode: JsonFlag = False,
    var: VarOpt = None,
    var_file: VarFileOpt = None,
    target: TargetOpt = None,
    refresh: RefreshOpt = True,
    parallelism: Parallelism = 10,
    lock_timeout: LockTimeout = "0s",
) -> None:
    """Destroy everything this state created, and nothing else."""
    from provisioner.cli import flows

    run = Run(json_mode)
    flows.plan_and_apply(run, run.workspace(file), auto_approve=auto_approve, destroy=True,
                         targets=target, replace=None, refresh=refresh,
                         parallelism=parallelism, lock_timeout=lock_timeout)


@app.command()
def recover(
    file: SpecFile = DEFAULT_SPEC,
    checkpoint: Annotated[Optional[str], typer.Option(
        "--checkpoint", metavar="ID", help="Restore this checkpoint (default: the latest).")] = None,
    auto_approve: AutoApprove = False,
    json_mode: JsonFlag = False,
    var: VarOpt = None,
    var_file: VarFileOpt = None,
    parallelism: Parallelism = 10,
    lock_timeout: LockTimeout = "0s",
) -> None:
    """Bring the cluster back after its head was lost: a new head, every app from the latest
    checkpoint, every route checked through the load balancer. A healthy head: nothing changes.
    Exit 4: no usable checkpoint (nothing changed)."""
    import time

    from provisioner.cli import recovery

    started = time.monotonic()
    run = Run(json_mode)
    recovery.recover(run, run.workspace(file), checkpoint_id=checkpoint,
                     auto_approve=auto_approve, parallelism=parallelism,
                     lock_timeout=lock_timeout, started=started)


@checkpoint_app.command("list")
def checkpoint_list(file: SpecFile = DEFAULT_SPEC, json_mode: JsonFlag = False,
                    var: VarOpt = None, var_file: VarFileOpt = None) -> None:
    """List the checkpoints in the spec's checkpoint store, oldest first."""
    from provisioner.cli import recovery

    run = Run(json_mode)
    recovery.checkpoint_list(run, run.workspace(file))


@checkpoint_app.command("show")
def checkpoint_show(
    checkpoint_id: Annotated[str, typer.Argument(metavar="ID")],
    file: SpecFile = DEFAULT_SPEC,
    json_mode: JsonFlag = False,
    var: VarOpt = None,
    var_file: VarFileOpt = None,
) -> None:
    """Show one checkpoint: what it holds and its Serve config."""
    from provisioner.cli import recovery

    run = Run(json_mode)
    recovery.checkpoint_show(run, run.workspace(file), checkpoint_id)


@app.command()
def show(
    planfile: Annotated[Optional[Path], typer.Argument(help="A saved plan; default: the state.")] = None,
    file: SpecFile = DEFAULT_SPEC,
    json_mode: JsonFlag = False,
    var: VarOpt = None,
    var_file: VarFileOpt = None,
) -> None:
    """Show a saved plan, or the current state."""
    from provisioner.cli import flows

    run = Run(json_mode)
    if planfile is not None:
        from provisioner.plan import load_plan

        flows.show_saved_plan(run, load_plan(planfile))
    else:
        flows.show_state(run, run.state_location(file))


@app.command()
def output(
    name: Annotated[Optional[str], typer.Argument(help="One output; default: all.")] = None,
    file: SpecFile = DEFAULT_SPEC,
    json_mode: JsonFlag = False,
    var: VarOpt = None,
    var_file: VarFileOpt = None,
) -> None:
    """Print the outputs recorded by the last apply."""
    from provisioner.cli import flows

    run = Run(json_mode)
    flows.show_outputs(run, run.state_location(file), name)


@app.command()
def status(file: SpecFile = DEFAULT_SPEC, json_mode: JsonFlag = False,
           var: VarOpt = None, var_file: VarFileOpt = None) -> None:
    """Live status: Ray nodes and Serve application states."""
    from provisioner.cli import flows

    run = Run(json_mode)
    flows.show_status(run, run.state_location(file))


@app.command("force-unlock")
def force_unlock(
    lock_id: Annotated[str, typer.Argument(metavar="ID", help="The lock id to remove.")],
    file: SpecFile = DEFAULT_SPEC,
    json_mode: JsonFlag = False,
    var: VarOpt = None,
    var_file: VarFileOpt = None,
) -> None:
    """Remove a lock left by a run that died. Only use it when that run is really gone."""
    from provisioner.events import make_event

    run = Run(json_mode)
    removed = run.state_location(file).backend().force_unlock(lock_id)
    run.view(make_event("unlocked", f"Removed {removed.describe()}",
                        data=removed.model_dump()))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec (for editors)."""
    import json

    from provisioner.spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2, sort_keys=True))


@state_app.command("list")
def state_list(file: SpecFile = DEFAULT_SPEC, json_mode: JsonFlag = False,
           var: VarOpt = None, var_file: VarFileOpt = None) -> None:
    """List the addresses recorded in the state."""
    from provisioner.cli import flows

    run = Run(json_mode)
    flows.state_list(run, run.state_location(file))


@state_app.command("show")
def state_show(
    address: Annotated[str, typer.Argument(metavar="ADDR")],
    file: SpecFile = DEFAULT_SPEC,
    json_mode: JsonFlag = False,
    var: VarOpt = None,
    var_file: VarFileOpt = None,
) -> None:
    """Show one resource as recorded in the state."""
    from provisioner.cli import flows

    run = Run(json_mode)
    flows.state_show(run, run.state_location(file), address)

"""The CLI as a user runs it (a real process): bad input, exit codes, approval, locks, saved
plans, and a kill -9 in the middle of an apply."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from state.backend import LockInfo
from state.local import LocalBackend

MEMORY_SPEC = """\
version: 1
name: clitest
provider: memory
variables:
  n: {type: number, default: 2}
  delay: {type: number, default: 0}
cluster:
  resources:
    - name: net
    - name: node
      count: ${var.n}
      depends_on: [net]
      delay_s: ${var.delay}
"""


def run(cwd: Path, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          **kwargs)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yaml").write_text(MEMORY_SPEC)
    return tmp_path


def snapshot(workdir: Path) -> dict[str, bytes]:
    """Every file provisioner keeps, to prove that a refused command changed nothing."""
    root = workdir / ".provisioner"
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".guard")}


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


BAD_SPECS = {
    "malformed_yaml": ("version: 1\nname: [oops\n", ["cluster.yaml", "line"]),
    "unknown_key": (MEMORY_SPEC.replace("provider: memory", "provider: memory\nclustr: {}"),
                    ["clustr", "did you mean 'cluster'"]),
    "wrong_type": (MEMORY_SPEC.replace("default: 2", "default: two"), ["n", "number"]),
    "bad_var_reference": (MEMORY_SPEC.replace("${var.n}", "${var.m}"), ["var.m"]),
    "bad_checkpoint_store": (MEMORY_SPEC + "serve:\n  manifest: serve.yaml\n"
                             "  checkpoint_store: ftp://backups/x\n",
                             ["serve.checkpoint_store", "s3://bucket/prefix"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_a_clear_error_and_changes_nothing(workdir: Path, case: str) -> None:
    assert run(workdir, "apply", "--auto-approve").returncode == 0
    before = snapshot(workdir)
    text, fragments = BAD_SPECS[case]
    (workdir / "cluster.yaml").write_text(text)
    for command in (["plan"], ["apply", "--auto-approve"], ["destroy", "--auto-approve"]):
        assert_clean_error(run(workdir, *command), *fragments)
    assert snapshot(workdir) == before


def write_module(workdir: Path, template: str) -> None:
    module = workdir / "mod"
    module.mkdir()
    (module / "module.yaml").write_text("provider: memory\ntemplate: resources.yaml.j2\n")
    (module / "resources.yaml.j2").write_text(textwrap.dedent(template))
    spec = MEMORY_SPEC.replace("provider: memory", "provider: memory\nmodule: ./mod")
    (workdir / "cluster.yaml").write_text(spec)


def test_unknown_reference_in_a_module(workdir: Path) -> None:
    write_module(workdir, """\
        resources:
          - address: memory_resource.a
            attributes: {index: 0, up: "${memory_resource.b.id}"}
        """)
    assert_clean_error(run(workdir, "validate"), "memory_resource.a.up",
                       "unknown resource memory_resource.b")
    assert snapshot(workdir) == {}


def test_dependency_cycle_in_a_module(workdir: Path) -> None:
    write_module(workdir, """\
        resources:
          - address: memory_resource.a
            attributes: {index: 0, up: "${memory_resource.b.id}"}
          - address: memory_resource.b
            attributes: {index: 0, up: "${memory_resource.a.id}"}
        """)
    assert_clean_error(run(workdir, "plan"), "dependency cycle", "memory_resource.a",
                       "memory_resource.b")


def test_missing_spec_file(tmp_path: Path) -> None:
    assert_clean_error(run(tmp_path, "plan"), "cluster.yaml", "-f")


def test_corrupt_state_is_refused_and_names_the_backup(workdir: Path) -> None:
    assert run(workdir, "apply", "--auto-approve").returncode == 0
    assert run(workdir, "apply", "--auto-approve", "--var", "n=3").returncode == 0
    state = workdir / ".provisioner" / "state.json"
    state.write_bytes(state.read_bytes()[: len(state.read_bytes()) // 2])  # truncated
    before = snapshot(workdir)
    result = run(workdir, "plan")
    assert_clean_error(result, "corrupt", "state.json.backup.")
    assert snapshot(workdir) == before


def test_lock_held_by_another_run(workdir: Path) -> None:
    assert run(workdir, "apply", "--auto-approve").returncode == 0
    backend = LocalBackend(workdir / ".provisioner" / "state.json")
    held = LockInfo.for_operation("apply", ttl_s=300)
    held.holder = "alice@ci-runner-7 pid 4242"
    backend.acquire_lock(held)
    before = snapshot(workdir)
    started = time.monotonic()
    result = run(workdir, "apply", "--auto-approve", "--var", "n=5", "--lock-timeout", "1s")
    assert time.monotonic() - started >= 1.0
    assert_clean_error(result, "alice@ci-runner-7 pid 4242", held.created_at, held.id, code=3)
    assert snapshot(workdir) == before

    assert run(workdir, "force-unlock", "not-the-id").returncode == 1
    unlocked = run(workdir, "force-unlock", held.id)
    assert unlocked.returncode == 0, unlocked.stderr
    assert run(workdir, "apply", "--auto-approve", "--var", "n=5").returncode == 0


def test_detailed_exitcode_and_pipeline_approval(workdir: Path) -> None:
    assert run(workdir, "plan", "--detailed-exitcode").returncode == 2
    refused = run(workdir, "apply")  # no terminal, no --auto-approve: refuse, never hang
    assert_clean_error(refused, "--auto-approve")
    assert snapshot(workdir) == {}
    assert run(workdir, "apply", "--auto-approve").returncode == 0
    assert run(workdir, "plan", "--detailed-exitcode").returncode == 0
    assert run(workdir, "plan", "--detailed-exitcode", "--var", "n=3").returncode == 2
    assert run(workdir, "plan", "--detailed-exitcode", "--var", "n=x").returncode == 1


def test_saved_plan_applies_once_and_stale_plan_is_refused(workdir: Path) -> None:
    assert run(workdir, "apply", "--auto-approve").returncode == 0
    assert run(workdir, "plan", "--var", "n=3", "--out", "p.plan").returncode == 0
    assert run(workdir, "plan", "--var", "n=4", "--out", "q.plan").returncode == 0
    shown = json.loads(run(workdir, "show", "--json", "p.plan").stdout)
    actions = {c["address"]: c["change"]["actions"] for c in shown["resource_changes"]}
    assert actions["memory_resource.node[2]"] == ["create"]
    assert actions["memory_resource.net"] == ["no-op"]

    applied = run(workdir, "apply", "p.plan")
    assert applied.returncode == 0, applied.stderr
    assert "1 added" in applied.stdout
    assert_clean_error(run(workdir, "apply", "q.plan"), "stale", "run plan again")
    assert_clean_error(run(workdir, "apply", "p.plan"), "stale")


def test_json_mode_streams_one_object_per_line(workdir: Path) -> None:
    result = run(workdir, "apply", "--auto-approve", "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert all({"type", "timestamp", "message"} <= set(e) for e in events)
    starts = [e for e in events if e["type"] == "apply_start"]
    assert {e["address"] for e in starts} == {"memory_resource.net", "memory_resource.node[0]",
                                              "memory_resource.node[1]"}
    assert all(e["action"] == "create" for e in starts)
    assert events[-2]["type"] == "apply_summary"


def test_kill_between_journal_and_provider_call_is_resolved(workdir: Path) -> None:
    """kill -9 while creates are in flight: the journal has them, nothing is unrecorded, and
    the next run resolves them before planning."""
    assert run(workdir, "apply", "--auto-approve").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "apply", "--auto-approve", "--json",
         "--var", "n=4", "--var", "delay=30"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        for line in proc.stdout:
            if json.loads(line)["type"] == "apply_start":
                break
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    state = json.loads((workdir / ".provisioner" / "state.json").read_text())
    assert state["pending"], "the journal entry is written before the provider call"

    locked = run(workdir, "plan", "--json", "--var", "n=4")  # the dead run's lock is still there
    assert locked.returncode == 3
    lock_id = json.loads((workdir / ".provisioner" / "state.json.lock").read_text())["id"]
    assert lock_id in locked.stdout
    assert run(workdir, "force-unlock", lock_id).returncode == 0
    result = run(workdir, "plan", "--json", "--var", "n=4")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert any(e["type"] == "journal_resolved" for e in events)
    state = json.loads((workdir / ".provisioner" / "state.json").read_text())
    assert state["pending"] == []
    assert run(workdir, "apply", "--auto-approve", "--var", "n=4").returncode == 0
    memory_files = list((workdir / ".provisioner" / "memory").rglob("*.json"))
    assert len(memory_files) == 5  # net + 4 nodes: nothing made twice, nothing lost


def test_sigterm_lets_changes_in_flight_finish_and_records_them(workdir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "apply", "--auto-approve", "--json",
         "--var", "delay=2", "--parallelism", "1"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["type"] == "apply_start" and seen[-1]["address"].startswith("memory_resource.node"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=60)
    seen += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 1
    assert any(e["type"] == "diagnostic" and "interrupted" in e["message"] for e in seen), err
    completed = {e["address"] for e in seen if e["type"] == "apply_complete"}
    skipped = {e["address"] for e in seen if e["type"] == "apply_skipped"}
    assert "memory_resource.net" in completed
    assert len(completed & {"memory_resource.node[0]", "memory_resource.node[1]"}) == 1
    assert len(skipped) == 1
    state = json.loads((workdir / ".provisioner" / "state.json").read_text())
    assert state["pending"] == []
    assert set(state["resources"]) == completed


def test_read_only_commands_need_no_variables(workdir: Path) -> None:
    spec = MEMORY_SPEC.replace("n: {type: number, default: 2}", "n: {type: number}")
    (workdir / "cluster.yaml").write_text(spec)
    assert_clean_error(run(workdir, "plan"), "n", "--var")
    assert run(workdir, "apply", "--auto-approve", "--var", "n=1").returncode == 0
    listed = run(workdir, "state", "list", "--json")
    assert json.loads(listed.stdout) == ["memory_resource.net", "memory_resource.node[0]"]
    assert json.loads(run(workdir, "output", "--json").stdout) == {"groups": ["net", "node"]}
    assert run(workdir, "status").returncode == 0
    assert_clean_error(run(workdir, "output", "nope"), "no output named 'nope'", "groups")


def test_heavy_libraries_are_imported_only_when_used() -> None:
    """The CLI starts fast: importing every command's code pulls in no Ray, no cloud client and
    no SSH library (each module imports them inside the function that needs them)."""
    probe = ("import sys; import provisioner.cli.app, provisioner.cli.flows, "
             "provisioner.cli.recovery, provisioner.recover, provisioner.workspace, "
             "provisioner.engine, provisioner.checkpoint.layout, provisioner.checkpoint.capture; "
             "print(sorted(m for m in ('ray', 'boto3', 'botocore', 'google.cloud.storage', "
             "'google.cloud.compute', 'paramiko') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_recover_without_a_ray_head_is_a_clear_error(workdir: Path) -> None:
    assert_clean_error(run(workdir, "recover", "--auto-approve"), "records no Ray head",
                       "run apply")
    assert run(workdir, "apply", "--auto-approve").returncode == 0
    before = snapshot(workdir)
    assert_clean_error(run(workdir, "recover", "--auto-approve"), "records no Ray head")
    assert snapshot(workdir) == before
    listed = run(workdir, "checkpoint", "list")
    assert listed.returncode == 0 and "No checkpoint in file://" in listed.stdout
    assert_clean_error(run(workdir, "checkpoint", "show", "nope"), "no checkpoint nope",
                       code=4)

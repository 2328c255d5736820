"""The quickstart user story, end to end, with the real CLI, real Ray and real Serve:

apply -> both routes answer -> plan says nothing to do -> a no-op apply keeps the Ray session ->
num_replicas 1 -> 2 plans ONE in-place update -> saved plan applied -> only that app's replicas
changed -> destroy leaves no Ray process of ours and an empty state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from provisioner.providers import processes
from tests.support import free_ports, state_lineage, stop_local_heads

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
PORT_VARS = ("gcs_port", "dashboard_port", "http_port", "client_server_port",
             "dashboard_agent_port")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quickstart")
    shutil.copytree(QUICKSTART, workdir, dirs_exist_ok=True)
    ports = dict(zip(PORT_VARS, free_ports(len(PORT_VARS))))
    env = dict(os.environ, **{f"PROVISIONER_VAR_{k}": str(v) for k, v in ports.items()})
    env["PROVISIONER_VAR_num_cpus"] = "2"
    yield workdir, ports, env
    # Whatever happened, no Ray of this test survives it.
    leftovers = stop_local_heads(state_lineage(workdir / ".provisioner" / "state.json"))
    assert not leftovers, f"Ray processes left behind in {leftovers}"


def cli(quickstart, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    workdir, _, env = quickstart
    result = subprocess.run([sys.executable, "-m", "provisioner", *args], cwd=workdir, env=env,
                            text=True, capture_output=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def head_record(quickstart) -> dict:
    shown = cli(quickstart, "state", "show", "local_ray_head.head", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def replica_ids(quickstart) -> dict[str, set[str]]:
    _, ports, _ = quickstart
    _, body = get(f"http://127.0.0.1:{ports['dashboard_port']}/api/serve/applications/")
    apps = json.loads(body)["applications"]
    return {
        name: {replica["actor_id"] for d in app["deployments"].values() for replica in d["replicas"]
               if replica["state"] == "RUNNING"}
        for name, app in apps.items()
    }


def test_quickstart_user_story(quickstart) -> None:
    workdir, ports, _ = quickstart
    base = f"http://127.0.0.1:{ports['http_port']}"

    applied = cli(quickstart, "apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in applied.stdout
    assert get(f"{base}/hello") == (200, "hello world (v1)")
    assert get(f"{base}/hello?name=ray") == (200, "hello ray (v1)")
    status, body = get(f"{base}/api/square/7")
    assert status == 200 and json.loads(body) == {"n": 7, "square": 49}
    assert json.loads(get(f"{base}/api/")[1]) == {"service": "api", "version": "v1"}

    outputs = json.loads(cli(quickstart, "output", "--json").stdout)
    assert outputs["serve_url"] == base
    assert outputs["dashboard_url"] == f"http://127.0.0.1:{ports['dashboard_port']}"

    head = head_record(quickstart)
    session = head["attributes"]["session_id"]
    pids_before = processes.ray_processes(head["attributes"]["pgid"],
                                          head["attributes"]["temp_dir"])
    assert pids_before

    noop = cli(quickstart, "plan", "--detailed-exitcode")
    assert noop.returncode == 0, noop.stdout + noop.stderr
    assert "No changes." in noop.stdout
    again = cli(quickstart, "apply", "--auto-approve")
    assert again.returncode == 0 and "0 added, 0 changed, 0 destroyed" in again.stdout
    assert head_record(quickstart)["attributes"]["session_id"] == session
    assert pids_before <= processes.ray_processes(head["attributes"]["pgid"],
                                                  head["attributes"]["temp_dir"])

    replicas_before = replica_ids(quickstart)
    manifest = workdir / "serve.yaml"
    text = manifest.read_text()
    edited = text.replace("name: Hello\n        num_replicas: 1", "name: Hello\n        num_replicas: 2")
    assert edited != text
    manifest.write_text(edited)

    planned = cli(quickstart, "plan", "--detailed-exitcode")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "# serve_app.hello will be updated in-place" in planned.stdout
    assert "deployments.Hello.num_replicas = 1 -> 2" in planned.stdout
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in planned.stdout
    as_json = cli(quickstart, "plan", "--json")
    changes = [json.loads(line) for line in as_json.stdout.splitlines()]
    changes = [e for e in changes if e["type"] == "planned_change"]
    assert [(e["address"], e["action"]) for e in changes] == [("serve_app.hello", "update")]

    saved = cli(quickstart, "plan", "--out", "p.plan")
    assert saved.returncode == 0 and (workdir / "p.plan").stat().st_mode & 0o077 == 0
    shown = json.loads(cli(quickstart, "show", "--json", "p.plan").stdout)
    actions = {c["address"]: c["change"]["actions"] for c in shown["resource_changes"]}
    assert actions == {"local_ray_head.head": ["no-op"], "serve_app.api": ["no-op"],
                       "serve_app.hello": ["update"]}
    applied = cli(quickstart, "apply", "p.plan")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "0 added, 1 changed, 0 destroyed" in applied.stdout

    replicas_after = replica_ids(quickstart)
    assert len(replicas_after["hello"]) == 2
    assert replicas_after["hello"] > replicas_before["hello"]
    assert replicas_after["api"] == replicas_before["api"], "the unchanged app was touched"
    assert head_record(quickstart)["attributes"]["session_id"] == session
    assert get(f"{base}/hello") == (200, "hello world (v1)")
    assert cli(quickstart, "plan", "--detailed-exitcode").returncode == 0

    status = cli(quickstart, "status", "--json")
    report = json.loads(status.stdout)["resources"]
    assert report["serve_app.hello"]["deployments"]["Hello"]["replicas"] == {"RUNNING": 2}

    # Serve fixes its HTTP port when it starts: a new port is an honest head replacement.
    new_port = str(free_ports(1)[0])
    moved = cli(quickstart, "plan", "--var", f"http_port={new_port}")
    assert "# local_ray_head.head must be replaced" in moved.stdout, moved.stdout
    assert "serve_http_options.port" in moved.stdout and "forces replacement" in moved.stdout
    assert "Plan: 1 to add, 2 to change, 1 to destroy." in moved.stdout
    applied = cli(quickstart, "apply", "--auto-approve", "--var", f"http_port={new_port}")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert get(f"http://127.0.0.1:{new_port}/hello") == (200, "hello world (v1)")
    assert head_record(quickstart)["attributes"]["session_id"] != session
    assert not [pid for pid in pids_before if processes.is_alive(pid)], "the old head lives on"
    head = head_record(quickstart)

    destroyed = cli(quickstart, "destroy", "--auto-approve", "--var", f"http_port={new_port}")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert "Destroy complete! Resources: 0 added, 0 changed, 3 destroyed." in destroyed.stdout
    assert json.loads(cli(quickstart, "state", "list", "--json").stdout) == []
    assert not processes.ray_processes(head["attributes"]["pgid"], head["attributes"]["temp_dir"])
    assert not Path(head["attributes"]["temp_dir"]).exists()


def test_head_lost_outside_provisioner_is_drift_and_recover_restores_it(quickstart) -> None:
    """kill -9 every process of the head (a crash): plan shows the drift; recover recreates the
    head and deploys both apps from the checkpoint; every route answers; destroy then succeeds
    with Ray gone. Before the crash, recover finds the head healthy and changes nothing."""
    workdir, ports, _ = quickstart
    base = f"http://127.0.0.1:{ports['http_port']}"
    applied = cli(quickstart, "apply", "--auto-approve")
    assert applied.returncode == 0 and "Checkpoint " in applied.stdout, applied.stdout
    state_file = workdir / ".provisioner" / "state.json"
    before = state_file.read_bytes()
    healthy = cli(quickstart, "recover")
    assert healthy.returncode == 0 and "is healthy" in healthy.stdout, healthy.stderr
    assert state_file.read_bytes() == before
    head = head_record(quickstart)["attributes"]
    for pid in processes.ray_processes(head["pgid"], head["temp_dir"]):
        os.kill(pid, 9)

    planned = cli(quickstart, "plan", "--detailed-exitcode")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "# local_ray_head.head has been deleted" in planned.stdout
    assert "# serve_app.hello has been deleted" in planned.stdout
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in planned.stdout

    recovered = cli(quickstart, "recover", "--auto-approve")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "every route answers through" in recovered.stdout
    assert get(f"{base}/hello") == (200, "hello world (v1)")
    assert json.loads(state_file.read_text())["history"]["recoveries"][-1]["seconds"] > 0
    assert cli(quickstart, "plan", "--detailed-exitcode").returncode == 0
    assert cli(quickstart, "destroy", "--auto-approve").returncode == 0
    assert json.loads(cli(quickstart, "state", "list", "--json").stdout) == []

"""local_ray_head and serve_app against a real Ray and a real Serve (no mocks).

One head for the module (started on free ports, always deleted in teardown, and no process tied
to its temp dir may survive). An unrelated Ray started by the test outside our temp dir must
survive the head's delete.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from provisioner.errors import ProviderError, ServeError
from provisioner.providers import processes
from provisioner.providers.base import KnownResource, ListScope, Owner, ProviderContext
from provisioner.providers.local import LocalRayHead
from provisioner.serve import dashboard, readers
from provisioner.providers.serve_app import ServeApp
from tests.support import free_ports

package = pytest.importorskip("provisioner.serve.package")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HEAD = "local_ray_head.head"
TIMINGS: dict[str, float] = {}

HELLO = '''
from ray import serve

@serve.deployment
class {cls}:
    def __call__(self, request):
        return "{text}"

app = {cls}.bind()
'''


class Progress:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, address: str, message: str) -> None:
        with self._lock:
            self.lines.append((address, message))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A live head (module-scoped) plus an unrelated Ray started beside it."""
    tmp = tmp_path_factory.mktemp("prv")
    owner = Owner("test", str(uuid.uuid4()))
    progress = Progress()
    ctx = ProviderContext(owner, tmp, tmp, progress)
    gcs, dash, client, agent, serve_port, other_gcs, other_client, other_agent = free_ports(8)
    desired = {"gcs_port": gcs, "dashboard_port": dash, "client_server_port": client,
               "dashboard_agent_port": agent, "num_cpus": 4, "node_ip": "127.0.0.1"}
    heads = LocalRayHead(ctx)
    temp_dir = str(heads.temp_dir_for(HEAD))

    # The unrelated Ray: its own temp dir, its own session; started concurrently to save time.
    other_temp = f"/tmp/prv-other-{uuid.uuid4().hex[:6]}"
    other_cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head",
                 f"--port={other_gcs}", "--include-dashboard=false", "--num-cpus=1",
                 f"--ray-client-server-port={other_client}",
                 f"--dashboard-agent-listen-port={other_agent}",
                 f"--temp-dir={other_temp}", "--disable-usage-stats"]
    other = subprocess.Popen(other_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    token = uuid.uuid4().hex
    try:
        started = time.monotonic()
        live = heads.create(HEAD, desired, token)
        TIMINGS["head_create_s"] = time.monotonic() - started
        other.wait(timeout=120)
        yield {"ctx": ctx, "owner": owner, "heads": heads, "head": live, "desired": desired,
               "token": token, "temp_dir": temp_dir, "serve_port": serve_port, "tmp": tmp,
               "progress": progress, "other": (other.pid, other_temp),
               "apps": ServeApp(ctx, timeout_s=120)}
    finally:
        try:
            heads.delete(HEAD, _dead_record(temp_dir))  # idempotent: reads pgid from owner.json
        finally:
            left = processes.ray_processes(None, temp_dir)
            processes.stop_ray(other.pid, other_temp, grace_s=10)
            subprocess.run(["rm", "-rf", other_temp], check=False)
            assert not left, f"Ray processes of the test survived: {left}"
            assert not processes.ray_processes(None, other_temp)
            assert not Path(temp_dir).exists()


def _dead_record(temp_dir: str):
    from provisioner.providers.base import LiveResource

    return LiveResource(HEAD, "gone", {"temp_dir": temp_dir})


def write_app(root: Path, module: str, cls: str, text: str) -> Path:
    source = root / module
    source.mkdir(parents=True, exist_ok=True)
    (source / f"{module}.py").write_text(HELLO.format(cls=cls, text=text))
    return source


def app_desired(env, name: str, source: Path, import_path: str, deployments: dict) -> dict:
    head = env["head"].attributes
    return {
        "name": name,
        "dashboard_url": head["dashboard_url"],
        "package_dir": head["package_dir"],
        "http_options": {"host": "127.0.0.1", "port": env["serve_port"], "keep_alive_timeout_s": 90},
        "proxy_location": "EveryNode",
        "route_prefix": f"/{name}",
        "import_path": import_path,
        "runtime_env": {"working_dir": package.package_name(package.package_digest(source))},
        "package_source": str(source),
        "deployments": deployments,
        "args": None,
        "extra": {},
    }


def http_get(env, path: str) -> str:
    url = f"http://127.0.0.1:{env['serve_port']}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def live_apps(env) -> dict:
    return readers.read_serve_status(
        dashboard.get_applications(env["head"].attributes["dashboard_url"])).apps


ONE_REPLICA = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}


# ---- the head ---------------------------------------------------------------------------------


def test_create_then_list_finds_head(env):
    head = env["head"]
    assert head.token == env["token"]
    attrs = head.attributes
    assert attrs["session_id"].startswith("session_")
    assert attrs["temp_dir"] == env["temp_dir"]
    assert attrs["package_dir"] == env["temp_dir"] + "/packages"
    assert attrs["dashboard_url"] == f"http://127.0.0.1:{env['desired']['dashboard_port']}"
    assert attrs["gcs_address"].endswith(f":{env['desired']['gcs_port']}")
    assert Path(attrs["package_dir"]).is_dir()
    found = env["heads"].list(ListScope(env["owner"]))
    assert [(r.address, r.token, r.attributes) for r in found] == [(HEAD, env["token"], attrs)]
    # Another lineage sees nothing.
    assert env["heads"].list(ListScope(Owner("test", str(uuid.uuid4())))) == []
    assert dashboard.get_version(attrs["dashboard_url"])["ray_version"]


def test_create_again_with_same_token_returns_same_head(env):
    again = env["heads"].create(HEAD, env["desired"], env["token"])
    assert again.attributes == env["head"].attributes
    assert again.id == env["head"].id
    with pytest.raises(ProviderError, match="already runs"):
        env["heads"].create(HEAD, env["desired"], uuid.uuid4().hex)


def test_port_in_use_is_named(env):
    desired = {**env["desired"], "gcs_port": free_ports(1)[0]}
    with pytest.raises(ProviderError, match=rf"dashboard_port {desired['dashboard_port']} is in use"):
        env["heads"].create("local_ray_head.second", desired, uuid.uuid4().hex)
    assert not Path(env["heads"].temp_dir_for("local_ray_head.second")).exists()


def test_update_is_refused(env):
    with pytest.raises(ProviderError, match="replacement"):
        env["heads"].update(HEAD, env["head"], env["desired"])


def test_head_status_lists_nodes(env):
    status = env["heads"].status(env["head"])
    assert status["session_id"] == env["head"].attributes["session_id"]
    assert [n["is_head"] for n in status["nodes"]] == [True]
    assert status["nodes"][0]["state"] == "ALIVE"


# ---- Serve apps -------------------------------------------------------------------------------


def test_deploy_two_apps_in_parallel(env):
    hello = app_desired(env, "hello", write_app(env["tmp"], "hello", "Hello", "hello"),
                        "hello:app", {"Hello": ONE_REPLICA})
    bye = app_desired(env, "bye", write_app(env["tmp"], "bye", "Bye", "bye"),
                      "bye:app", {"Bye": ONE_REPLICA})
    results: dict = {}

    def deploy(desired):
        try:
            results[desired["name"]] = env["apps"].create(f"serve_app.{desired['name']}",
                                                          desired, uuid.uuid4().hex)
        except Exception as error:  # noqa: BLE001 - reported below
            results[desired["name"]] = error

    started = time.monotonic()
    threads = [threading.Thread(target=deploy, args=(d,)) for d in (hello, bye)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    TIMINGS["two_apps_deploy_s"] = time.monotonic() - started
    for name in ("hello", "bye"):
        assert not isinstance(results[name], Exception), results[name]
        assert results[name].attributes["status"] == "RUNNING"
    assert http_get(env, "/hello") == "hello"
    assert http_get(env, "/bye") == "bye"
    assert Path(hello["package_dir"], hello["runtime_env"]["working_dir"]).is_file()

    # list() gives back the desired shape, plus the computed status/message.
    known = [KnownResource("serve_app.hello", hello), KnownResource("serve_app.bye", bye)]
    found = {r.address: r for r in env["apps"].list(ListScope(env["owner"], known))}
    assert sorted(found) == ["serve_app.bye", "serve_app.hello"]
    for desired in (hello, bye):
        live = found[f"serve_app.{desired['name']}"]
        assert live.id == desired["name"]
        assert {k: v for k, v in live.attributes.items() if k not in ("status", "message")} == desired
        assert live.attributes["status"] == "RUNNING"
    env["hello"], env["bye"] = hello, bye
    env["hello_live"], env["bye_live"] = results["hello"], results["bye"]
    progress = [m for a, m in env["progress"].lines if a == "serve_app.hello"]
    assert any("DEPLOYING" in m for m in progress) or any("deploying" in m for m in progress)


def test_update_replicas_leaves_other_app_alone(env):
    before = live_apps(env)
    bye_actors = before["bye"].deployments["Bye"].replica_actor_ids
    hello = {**env["hello"], "deployments": {"Hello": {**ONE_REPLICA, "num_replicas": 2}}}
    started = time.monotonic()
    live = env["apps"].update("serve_app.hello", env["hello_live"], hello)
    TIMINGS["update_replicas_s"] = time.monotonic() - started
    assert live.attributes["deployments"]["Hello"]["num_replicas"] == 2
    after = live_apps(env)
    assert after["hello"].deployments["Hello"].replica_states == {"RUNNING": 2}
    assert after["bye"].deployments["Bye"].replica_actor_ids == bye_actors
    assert after["bye"].status == "RUNNING"
    assert http_get(env, "/bye") == "bye"
    env["hello"] = hello
    status = env["apps"].status(live)
    assert status["deployments"]["Hello"]["replicas"] == {"RUNNING": 2}


def test_broken_app_fails_with_rays_own_error(env):
    source = env["tmp"] / "broken"
    source.mkdir()
    (source / "broken.py").write_text("import no_such_module_xyz\n")
    desired = app_desired(env, "broken", source, "broken:app", {})
    started = time.monotonic()
    with pytest.raises(ServeError) as caught:
        env["apps"].create("serve_app.broken", desired, uuid.uuid4().hex)
    TIMINGS["broken_app_s"] = time.monotonic() - started
    assert "No module named 'no_such_module_xyz'" in str(caught.value)
    assert "DEPLOY_FAILED" in str(caught.value)
    env["apps"].delete("serve_app.broken", _app_record("broken", desired))
    assert "broken" not in live_apps(env)
    assert http_get(env, "/hello") == "hello"


def test_changed_code_since_plan_is_refused(env):
    desired = {**env["bye"], "runtime_env": {"working_dir": "pkg_" + "0" * 32 + ".zip"}}
    with pytest.raises(ServeError, match="working_dir changed since plan"):
        env["apps"].update("serve_app.bye", env["bye_live"], desired)


def test_http_options_change_is_refused(env):
    desired = {**env["bye"], "http_options": {**env["bye"]["http_options"], "port": 1}}
    with pytest.raises(ServeError, match="http_options"):
        env["apps"].update("serve_app.bye", env["bye_live"], desired)


def test_delete_app(env):
    record = _app_record("bye", env["bye"])
    env["apps"].delete("serve_app.bye", record)
    apps = live_apps(env)
    assert "bye" not in apps and apps["hello"].status == "RUNNING"
    env["apps"].delete("serve_app.bye", record)  # already gone: success
    known = [KnownResource("serve_app.hello", env["hello"]), KnownResource("serve_app.bye", env["bye"])]
    assert [r.address for r in env["apps"].list(ListScope(env["owner"], known))] == ["serve_app.hello"]


def _app_record(name: str, desired: dict):
    from provisioner.providers.base import LiveResource

    return LiveResource(f"serve_app.{name}", name, dict(desired))


# ---- an interrupted create is adopted ----------------------------------------------------------

CREATE_SCRIPT = """
import json, sys
from pathlib import Path
from provisioner.providers.base import Owner, ProviderContext
from provisioner.providers.local import LocalRayHead
lineage, token, desired = sys.argv[1:]
ctx = ProviderContext(Owner("test", lineage), Path("/tmp"), Path("/tmp"))
LocalRayHead(ctx).create("local_ray_head.interrupted", json.loads(desired), token)
"""


def test_interrupted_create_is_found_by_token_and_adopted(env):
    heads, owner = env["heads"], env["owner"]
    address = "local_ray_head.interrupted"
    temp_dir = heads.temp_dir_for(address)
    gcs, dash, client, agent = free_ports(4)
    desired = {"gcs_port": gcs, "dashboard_port": dash, "client_server_port": client,
               "dashboard_agent_port": agent, "num_cpus": 1, "node_ip": "127.0.0.1"}
    token = uuid.uuid4().hex
    creator = subprocess.Popen(
        [sys.executable, "-c", CREATE_SCRIPT, owner.lineage, token, json.dumps(desired)],
        cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 30
        while not (temp_dir / "owner.json").exists() or \
                json.loads((temp_dir / "owner.json").read_text()).get("pgid") is None:
            assert time.monotonic() < deadline and creator.poll() is None
            time.sleep(0.05)
        creator.kill()  # the apply dies while `ray start` is still starting
        creator.wait()
        deadline = time.monotonic() + 60
        while True:
            found = [r for r in heads.list(ListScope(owner)) if r.token == token]
            if found:
                break
            assert time.monotonic() < deadline, "the interrupted head never showed up in list()"
            time.sleep(0.5)
        assert found[0].address == address
        adopted = heads.create(address, desired, token)
        assert adopted.attributes == found[0].attributes
        assert ("local_ray_head.interrupted", "Ray head already running (same token): adopted") \
            in env["progress"].lines
    finally:
        creator.kill()
        creator.wait()
        heads.delete(address, _dead_record(str(temp_dir)))
    assert not processes.ray_processes(None, str(temp_dir))
    assert not temp_dir.exists()
    assert [r.address for r in heads.list(ListScope(owner))] == [HEAD]


# ---- delete the head (last) -------------------------------------------------------------------


def test_delete_head_stops_only_its_own_ray(env):
    other_pid, other_temp = env["other"]
    assert processes.ray_processes(None, other_temp), "the unrelated Ray is not running"
    temp_dir = env["temp_dir"]
    ours = processes.ray_processes(env["head"].attributes["pgid"], temp_dir)
    assert any(processes.command_name(p) == "raylet" for p in ours)
    started = time.monotonic()
    env["heads"].delete(HEAD, env["head"])
    TIMINGS["head_delete_s"] = time.monotonic() - started
    assert not processes.ray_processes(None, temp_dir)
    assert not any(processes.is_alive(pid) for pid in ours)
    assert not Path(temp_dir).exists()
    assert env["heads"].list(ListScope(env["owner"])) == []
    # the unrelated Ray is untouched
    others = processes.ray_processes(None, other_temp)
    assert any(processes.command_name(p) == "raylet" for p in others)
    assert any(processes.command_name(p) == "gcs_server" for p in others)
    # already gone: success; and a dead head's app list is empty, not an error
    env["heads"].delete(HEAD, env["head"])
    assert env["apps"].list(ListScope(env["owner"], [KnownResource("serve_app.hello", env["hello"])])) == []


def test_report_timings(env, record_testsuite_property):
    """Timings land in the JUnit XML (--junitxml) as properties; nothing is asserted on them."""
    for key, value in TIMINGS.items():
        record_testsuite_property(key, round(value, 2))

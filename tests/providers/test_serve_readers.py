"""Readers of the dashboard's answers, on answers recorded from a real Ray 2.60, and the pure
mapping between serve_app attributes and Serve's app config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.errors import ServeError
from provisioner.serve import readers
from provisioner.providers.serve_app import app_config, deploy_body, http_options_conflict

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_empty_serve_has_no_apps_and_no_controller():
    status = readers.read_serve_status(load("serve_empty.json"))
    assert status.apps == {}
    assert not status.controller_running
    assert readers.read_serve_status(None).apps == {}


def test_running_apps():
    status = readers.read_serve_status(load("serve_running.json"))
    assert status.controller_running
    assert status.proxy_location == "EveryNode"
    assert status.http_options["port"] == 8011
    assert status.http_options["keep_alive_timeout_s"] == 90
    assert set(status.proxies.values()) == {"HEALTHY"}
    assert sorted(status.apps) == ["bye", "hello"]
    hello = status.apps["hello"]
    assert hello.status == readers.RUNNING and not hello.failed
    assert hello.config == {
        "name": "hello", "route_prefix": "/hello", "import_path": "hello:app",
        "runtime_env": {"working_dir": "file:///tmp/pe1w/a.zip"},
        "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
    }
    dep = hello.deployments["Hello"]
    assert dep.status == "HEALTHY"
    assert dep.target_replicas == 1
    assert dep.replica_states == {"RUNNING": 1}
    assert dep.running_replicas == 1
    assert len(dep.replica_actor_ids) == 1
    assert readers.progress_line(hello) == "RUNNING: Hello HEALTHY 1/1 running"
    summary = readers.app_summary(hello)
    assert summary["deployments"]["Hello"]["replicas"] == {"RUNNING": 1}


def test_deleting_app_has_no_config():
    status = readers.read_serve_status(load("serve_deleting.json"))
    assert status.apps["ctor"].status == readers.DELETING
    assert status.apps["ctor"].config is None
    assert status.apps["hello"].status == readers.DEPLOYING
    assert readers.progress_line(status.apps["hello"]) == "DEPLOYING"


def test_import_failure_message_is_rays_own():
    app = readers.read_serve_status(load("serve_import_failed.json")).apps["broken"]
    assert app.failed and app.status == readers.DEPLOY_FAILED
    message = readers.failure_message(app)
    assert "ModuleNotFoundError: No module named 'no_such_module_xyz'" in message


def test_constructor_failure_message_names_the_deployment():
    app = readers.read_serve_status(load("serve_ctor_failed.json")).apps["ctor"]
    assert app.failed
    message = readers.failure_message(app)
    assert message.startswith("Failed to update the deployments ['Ctor'].")
    assert "deployment Ctor DEPLOY_FAILED" in message
    assert "constructor exploded on purpose" in message


def test_nodes():
    nodes = readers.read_nodes(load("nodes_v0.json"))
    assert len(nodes) == 1
    assert nodes[0]["is_head"] and nodes[0]["state"] == "ALIVE" and nodes[0]["cpus"] == 2.0
    assert readers.read_nodes({}) == []


DESIRED = {
    "name": "hello",
    "dashboard_url": "http://127.0.0.1:8265",
    "package_dir": "/tmp/provisioner/abcd1234/head/packages",
    "http_options": {"host": "127.0.0.1", "port": 8000, "keep_alive_timeout_s": 90},
    "proxy_location": "EveryNode",
    "route_prefix": "/hello",
    "import_path": "hello:app",
    "runtime_env": {"working_dir": "pkg_" + "a" * 32 + ".zip", "env_vars": {"A": "1"}},
    "package_source": "/src/hello",
    "deployments": {"Zeta": {"num_replicas": 2}, "Alpha": {"user_config": {"x": 1}}},
    "args": None,
    "extra": {"logging_config": {"log_level": "DEBUG"}},
}


def test_app_config_maps_package_and_sorts_deployments():
    config = app_config(DESIRED)
    assert config == {
        "name": "hello",
        "route_prefix": "/hello",
        "import_path": "hello:app",
        "runtime_env": {
            "working_dir": "file:///tmp/provisioner/abcd1234/head/packages/pkg_" + "a" * 32 + ".zip",
            "env_vars": {"A": "1"},
        },
        "deployments": [{"name": "Alpha", "user_config": {"x": 1}},
                        {"name": "Zeta", "num_replicas": 2}],
        "logging_config": {"log_level": "DEBUG"},
    }


def test_app_attributes_is_the_inverse_of_app_config():
    attributes = readers.app_attributes(app_config(DESIRED))
    for key in ("name", "route_prefix", "import_path", "runtime_env", "deployments", "args", "extra"):
        assert attributes[key] == DESIRED[key], key


def test_minimal_app_round_trips():
    desired = {"name": "x", "import_path": "m:app", "route_prefix": None, "runtime_env": {},
               "deployments": {}, "args": None, "extra": {}, "package_dir": None}
    config = app_config(desired)
    assert config == {"name": "x", "import_path": "m:app"}
    attributes = readers.app_attributes(config)
    assert {k: attributes[k] for k in ("route_prefix", "runtime_env", "deployments", "args", "extra")} == {
        "route_prefix": None, "runtime_env": {}, "deployments": {}, "args": None, "extra": {}}


def test_remote_working_dir_is_kept():
    desired = {**DESIRED, "runtime_env": {"working_dir": "s3://bucket/code.zip"}}
    assert app_config(desired)["runtime_env"]["working_dir"] == "s3://bucket/code.zip"
    assert readers.package_name_of("s3://bucket/code.zip") == "s3://bucket/code.zip"
    assert readers.package_name_of("file:///x/other.zip") == "file:///x/other.zip"


def test_package_name_without_package_dir_is_an_error():
    with pytest.raises(ServeError):
        app_config({**DESIRED, "package_dir": None})


def test_deploy_body_sorts_apps_and_keeps_options():
    body = deploy_body(DESIRED, [{"name": "b"}, {"name": "a"}])
    assert [a["name"] for a in body["applications"]] == ["a", "b"]
    assert body["proxy_location"] == "EveryNode"
    assert body["http_options"]["port"] == 8000


def test_http_options_conflict_only_when_serve_runs():
    running = readers.read_serve_status(load("serve_running.json"))
    assert http_options_conflict({"host": "127.0.0.1", "port": 8011}, running) == ""
    assert "port: running 8011, wanted 9000" in http_options_conflict({"port": 9000}, running)
    empty = readers.read_serve_status(load("serve_empty.json"))
    assert http_options_conflict({"port": 9000}, empty) == ""

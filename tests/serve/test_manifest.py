"""The Serve manifest: values kept as written, working_dir resolution, to_config substitution.

Bad manifests are in tests/spec/test_bad_specs.py (they are reached through load_spec).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from provisioner.errors import SpecError
from provisioner.serve.manifest import ServeManifest, load_manifest

MANIFEST = textwrap.dedent("""\
    proxy_location: EveryNode
    http_options:
      port: 8000
      keep_alive_timeout_s: 120
    applications:
      - name: hello
        route_prefix: /hello
        import_path: app:hello
        runtime_env:
          working_dir: ./code
          env_vars: {GREETING: hi}
          pip: [requests]
        args: {model: small}
        deployments:
          - name: Hello
            num_replicas: 2
            user_config: {threshold: 0.5}
            ray_actor_options: {num_cpus: 0.1, resources: {custom: 1}}
      - name: remote
        route_prefix: /remote
        import_path: pkg.mod.app
        runtime_env: {working_dir: "s3://bucket/code.zip"}
      - name: nohttp
        route_prefix: null
        import_path: worker:app
        deployments:
          - {name: W, num_replicas: auto, autoscaling_config: {min_replicas: 0, max_replicas: 4}}
    """)


@pytest.fixture
def manifest(tmp_path: Path) -> ServeManifest:
    (tmp_path / "code").mkdir()
    (tmp_path / "serve.yaml").write_text(MANIFEST)
    return load_manifest(tmp_path / "serve.yaml", spec_source="cluster.yaml")


def test_loads_apps_and_options(manifest: ServeManifest, tmp_path: Path) -> None:
    assert manifest.path == tmp_path / "serve.yaml"
    assert manifest.http_port == 8000
    assert [a.name for a in manifest.applications] == ["hello", "remote", "nohttp"]
    hello = manifest.application("hello")
    assert hello.deployments[0].num_replicas == 2
    assert hello.deployments[0].user_config == {"threshold": 0.5}
    assert manifest.application("nohttp").route_prefix is None
    assert manifest.application("nohttp").deployments[0].autoscaling
    with pytest.raises(KeyError):
        manifest.application("missing")


def test_working_dirs(manifest: ServeManifest, tmp_path: Path) -> None:
    hello, remote, nohttp = manifest.applications
    assert hello.working_dir == "./code" and hello.local_working_dir == tmp_path / "code"
    assert remote.working_dir == "s3://bucket/code.zip" and remote.local_working_dir is None
    assert nohttp.working_dir is None and nohttp.local_working_dir is None
    assert manifest.resolve_working_dir("./code") == tmp_path / "code"


def test_to_config_is_the_file_as_written(manifest: ServeManifest) -> None:
    import yaml

    written = yaml.safe_load(MANIFEST)
    assert manifest.to_config() == written
    assert manifest.applications[0].to_config() == written["applications"][0]
    assert manifest.top_config() == {k: v for k, v in written.items() if k != "applications"}
    # nothing filled in: no None-valued defaults anywhere
    assert "max_ongoing_requests" not in manifest.applications[0].to_config()["deployments"][0]


def test_to_config_replaces_working_dir_and_copies(manifest: ServeManifest) -> None:
    uri = "gs://bucket/pkg_0123.zip"
    app = manifest.applications[0].to_config(working_dir=uri)
    assert app["runtime_env"] == {"working_dir": uri, "env_vars": {"GREETING": "hi"}, "pip": ["requests"]}
    whole = manifest.to_config(working_dirs={"hello": uri})
    assert whole["applications"][0]["runtime_env"]["working_dir"] == uri
    assert whole["applications"][1]["runtime_env"]["working_dir"] == "s3://bucket/code.zip"
    # the returned dicts are copies: changing them changes nothing in the manifest
    app["runtime_env"]["pip"].append("x")
    whole["applications"][0]["args"]["model"] = "big"
    assert manifest.applications[0].to_config()["runtime_env"]["pip"] == ["requests"]
    assert manifest.applications[0].to_config()["args"] == {"model": "small"}


def test_app_without_runtime_env_gets_one_for_working_dir(tmp_path: Path) -> None:
    (tmp_path / "serve.yaml").write_text("applications:\n  - import_path: a:b\n")
    app = load_manifest(tmp_path / "serve.yaml", spec_source="c.yaml").applications[0]
    assert app.name == "default" and app.route_prefix == "/"
    assert app.to_config() == {"import_path": "a:b"}
    assert app.to_config(working_dir="file:///x.zip") == {
        "import_path": "a:b",
        "runtime_env": {"working_dir": "file:///x.zip"},
    }


@pytest.mark.parametrize("uri", ["s3://b/k.zip", "gs://b/k.zip", "https://h/k.zip", "file:///tmp/k.zip", "local://dir"])
def test_remote_working_dirs_are_kept(tmp_path: Path, uri: str) -> None:
    (tmp_path / "serve.yaml").write_text(f"applications:\n  - import_path: a:b\n    runtime_env: {{working_dir: '{uri}'}}\n")
    app = load_manifest(tmp_path / "serve.yaml", spec_source="c.yaml").applications[0]
    assert app.working_dir == uri and app.local_working_dir is None


def test_missing_manifest_names_the_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="serve.manifest in cluster.yaml") as info:
        load_manifest(tmp_path / "nope.yaml", spec_source="cluster.yaml")
    assert info.value.source == str(tmp_path / "nope.yaml")


def test_manifest_module_does_not_import_ray() -> None:
    import subprocess

    code = "import sys, provisioner.serve.manifest, provisioner.serve.package; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])

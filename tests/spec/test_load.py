"""Valid specs load into the expected models and paths; the JSON Schema matches the models."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from provisioner.spec import (
    PROVIDERS,
    LocalSettings,
    MemorySettings,
    Spec,
    StateRef,
    load_spec,
    locate_state,
    spec_json_schema,
    spec_model,
)

from provisioner.errors import SpecError

from .helpers import BASE_SPEC, SERVE_YAML, write_tree

FULL_LOCAL = BASE_SPEC + textwrap.dedent("""\
    module: ./my-module
    state:
      backend: local
      path: run/state.json
    variables:
      dashboard_port:
        type: number
        default: 8265
        description: Dashboard port
        validation: {min: 1024, max: 65535, message: must be an unprivileged port}
    cluster:
      dashboard_port: ${var.dashboard_port}
      num_cpus: 2
    serve:
      manifest: serve.yaml
      http_port: 8000
    outputs:
      dashboard: ${local_ray_head.head.dashboard_url}
    """)

MEMORY = textwrap.dedent("""\
    version: 1
    name: bench-1
    provider: memory
    cluster:
      resources:
        - name: net
        - name: node
          count: 3
          depends_on: [net]
          attributes: {size: small, tags: [a]}
          delay_s: 0.01
        - name: lb
          depends_on: [node, net]
          fail: create
    """)


def test_full_local_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path, {"cluster.yaml": FULL_LOCAL, "serve.yaml": SERVE_YAML, "app/": "", "my-module/": ""})
    monkeypatch.chdir(tmp_path.parent)
    loaded = load_spec(Path(tmp_path.name) / "cluster.yaml", environ={})
    assert loaded.path == tmp_path / "cluster.yaml"
    assert loaded.source == f"{tmp_path.name}/cluster.yaml"
    assert loaded.base_dir == tmp_path
    assert loaded.state_path == tmp_path / "run" / "state.json"
    assert loaded.module_dir == tmp_path / "my-module"
    assert loaded.manifest_path == tmp_path / "serve.yaml"
    spec = loaded.spec
    assert isinstance(spec, Spec) and isinstance(spec, spec_model("local"))
    assert isinstance(spec.cluster, LocalSettings)
    assert spec.cluster.dashboard_port == 8265 and spec.cluster.gcs_port == 6379
    assert spec.cluster.num_cpus == 2 and spec.cluster.node_ip == "127.0.0.1"
    assert spec.serve is not None and spec.serve.http_host == "0.0.0.0"
    assert loaded.manifest is not None
    assert [a.name for a in loaded.manifest.applications] == ["hello"]
    assert loaded.manifest.applications[0].local_working_dir == tmp_path / "app"


def test_minimal_spec_defaults(tmp_path: Path) -> None:
    write_tree(tmp_path, {"cluster.yaml": BASE_SPEC})
    loaded = load_spec(tmp_path, environ={})  # a directory means its cluster.yaml
    assert loaded.spec.cluster == LocalSettings()
    assert loaded.state_path == tmp_path / ".provisioner" / "state.json"
    assert loaded.manifest is None and loaded.manifest_path is None and loaded.module_dir is None
    assert loaded.spec.outputs == {} and loaded.spec.variables == {}


def test_memory_spec(tmp_path: Path) -> None:
    write_tree(tmp_path, {"cluster.yaml": MEMORY})
    spec = load_spec(tmp_path / "cluster.yaml", environ={}).spec
    assert isinstance(spec.cluster, MemorySettings)
    node = spec.cluster.resources[1]
    assert (node.name, node.count, node.depends_on, node.delay_s) == ("node", 3, ["net"], 0.01)
    assert node.attributes == {"size": "small", "tags": ["a"]}
    assert spec.cluster.resources[0].count is None
    assert spec.cluster.resources[2].fail == "create"


def test_models_dump_and_reload(tmp_path: Path) -> None:
    write_tree(tmp_path, {"cluster.yaml": MEMORY})
    spec = load_spec(tmp_path / "cluster.yaml", environ={}).spec
    again = spec_model("memory").model_validate(spec.model_dump(mode="json"))
    assert again == spec


def test_absolute_state_path_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "s.json"
    write_tree(tmp_path, {"cluster.yaml": BASE_SPEC + f"state: {{path: {target}}}\n"})
    assert load_spec(tmp_path / "cluster.yaml", environ={}).state_path == target


S3_STATE = BASE_SPEC + "state: {backend: s3, bucket: team-tfstate, region: eu-west-1}\n"


def test_s3_state(tmp_path: Path) -> None:
    write_tree(tmp_path, {"cluster.yaml": S3_STATE})
    loaded = load_spec(tmp_path / "cluster.yaml", environ={})
    assert loaded.state == StateRef(backend="s3", data_dir=tmp_path / ".provisioner",
                                    bucket="team-tfstate", key="provisioner/quickstart/state.json",
                                    region="eu-west-1")
    assert loaded.state_path is None
    assert loaded.state.describe() == "s3://team-tfstate/provisioner/quickstart/state.json"
    keyed = S3_STATE.replace("region: eu-west-1", "key: a/b.json")
    write_tree(tmp_path, {"cluster.yaml": keyed})
    assert load_spec(tmp_path / "cluster.yaml", environ={}).state.key == "a/b.json"


GCS_STATE = BASE_SPEC + "state: {backend: gcs, bucket: team_tfstate, project: team-proj-1}\n"


def test_gcs_state(tmp_path: Path) -> None:
    write_tree(tmp_path, {"cluster.yaml": GCS_STATE})
    loaded = load_spec(tmp_path / "cluster.yaml", environ={})
    assert loaded.state == StateRef(backend="gcs", data_dir=tmp_path / ".provisioner",
                                    bucket="team_tfstate",
                                    key="provisioner/quickstart/state.json",
                                    project="team-proj-1")
    assert loaded.state_path is None
    assert loaded.state.describe() == "gs://team_tfstate/provisioner/quickstart/state.json"
    keyed = GCS_STATE.replace("project: team-proj-1", "key: a/b.json")
    write_tree(tmp_path, {"cluster.yaml": keyed})
    state = load_spec(tmp_path / "cluster.yaml", environ={}).state
    assert (state.key, state.project) == ("a/b.json", None)


@pytest.mark.parametrize("text", [BASE_SPEC, FULL_LOCAL, S3_STATE, GCS_STATE,
                                  BASE_SPEC.replace("quickstart", "${var.n}")
                                  + "variables: {n: {default: named}}\n"],
                         ids=["default", "local-path", "s3", "gcs", "name-from-variable"])
def test_locate_state_agrees_with_load(tmp_path: Path, text: str) -> None:
    write_tree(tmp_path, {"cluster.yaml": text, "serve.yaml": SERVE_YAML, "app/": "",
                          "my-module/": ""})
    loaded = load_spec(tmp_path / "cluster.yaml", environ={})
    assert locate_state(tmp_path / "cluster.yaml") == (loaded.spec.name, loaded.state)


def test_locate_state_refuses_a_bad_state_section(tmp_path: Path) -> None:
    # Without the full load (the manifest is missing), still a SpecError naming file and key.
    write_tree(tmp_path, {"cluster.yaml": BASE_SPEC + "state: {backend: s3, region: x}\n"
                          "serve: {manifest: missing.yaml}\n"})
    with pytest.raises(SpecError) as raised:
        locate_state(tmp_path / "cluster.yaml")
    assert raised.value.path == "state.bucket" and raised.value.source.endswith("cluster.yaml")
    write_tree(tmp_path, {"cluster.yaml": BASE_SPEC + "state: {backend: s3, bucket: B}\n"})
    with pytest.raises(SpecError, match="S3 bucket name"):
        locate_state(tmp_path / "cluster.yaml")


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    write_tree(tmp_path, {"cluster.yaml": textwrap.dedent("""\
        version: 1
        name: m1
        provider: memory
        cluster:
          resources:
            - &a {name: a, count: 2}
            - {<<: *a, name: b, count: 5}
            - {<<: *a, name: c}
        """)})
    resources = load_spec(tmp_path / "cluster.yaml", environ={}).spec.cluster.resources
    assert [(r.name, r.count) for r in resources] == [("a", 2), ("b", 5), ("c", 2)]


# -- JSON Schema ---------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    schema = spec_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["discriminator"]["propertyName"] == "provider"
    assert set(schema["discriminator"]["mapping"]) == set(PROVIDERS)


@pytest.mark.parametrize("text", [FULL_LOCAL, MEMORY, BASE_SPEC, S3_STATE], ids=["local-full", "memory", "minimal", "s3-state"])
def test_valid_specs_pass_the_schema(text: str) -> None:
    jsonschema.validate(yaml.safe_load(text), spec_json_schema())


@pytest.mark.parametrize(
    "text",
    [
        BASE_SPEC + "cluster: {dashbord_port: 1}\n",
        BASE_SPEC + "cluster: {gcs_port: 70000}\n",
        BASE_SPEC.replace("local", "nope"),
        BASE_SPEC + "colour: red\n",
        MEMORY.replace("delay_s: 0.01", "delay: 0.01"),
    ],
    ids=["unknown-cluster-key", "port-range", "unknown-provider", "unknown-top-key", "memory-unknown-key"],
)
def test_invalid_specs_fail_the_schema(text: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(text), spec_json_schema())


def test_loading_does_not_import_ray(tmp_path: Path) -> None:
    write_tree(tmp_path, {"cluster.yaml": FULL_LOCAL, "serve.yaml": SERVE_YAML, "app/": "", "my-module/": ""})
    code = (
        "import sys; from pathlib import Path; from provisioner.spec import load_spec;"
        "from provisioner.serve.package import package_digest;"
        f"l = load_spec(Path({str(tmp_path / 'cluster.yaml')!r}), environ={{}});"
        "package_digest(l.manifest.applications[0].local_working_dir);"
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])

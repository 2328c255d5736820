"""Variables: precedence, typing of text values, interpolation, secrets and saved plans."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from provisioner.errors import SpecError
from provisioner.spec import (
    SENSITIVE_PREFIX,
    ResolvedVariables,
    VariableDecl,
    load_spec,
    resolve_variables,
    var_order_from_argv,
)
from provisioner.spec.variables import parse_text

from .helpers import BASE_SPEC, write_tree

PORT_SPEC = BASE_SPEC + """\
variables:
  port:
    type: number
    default: 8265
cluster:
  dashboard_port: ${var.port}
"""


@pytest.fixture
def spec_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {
        "cluster.yaml": PORT_SPEC,
        "a.yaml": "port: 8001\n",
        "b.json": '{"port": 8002}\n',
    })
    return tmp_path


# (environment, ordered --var/--var-file items) -> the value that wins, and its source
PRECEDENCE = [
    ("default-only", {}, [], 8265, "default"),
    ("env-beats-default", {"PROVISIONER_VAR_port": "8100"}, [], 8100, "environment (PROVISIONER_VAR_port)"),
    ("file-beats-env", {"PROVISIONER_VAR_port": "8100"}, [("file", "a.yaml")], 8001, "--var-file a.yaml"),
    ("flag-beats-env", {"PROVISIONER_VAR_port": "8100"}, [("var", "port=8200")], 8200, "--var"),
    ("later-file-wins", {}, [("file", "a.yaml"), ("file", "b.json")], 8002, "--var-file b.json"),
    ("flag-then-file", {}, [("var", "port=8200"), ("file", "a.yaml")], 8001, "--var-file a.yaml"),
    ("file-then-flag", {}, [("file", "a.yaml"), ("var", "port=8200")], 8200, "--var"),
    ("last-flag-wins", {}, [("var", "port=8200"), ("var", "port=8300")], 8300, "--var"),
]


@pytest.mark.parametrize(("env", "order", "value", "source"), [p[1:] for p in PRECEDENCE], ids=[p[0] for p in PRECEDENCE])
def test_precedence(spec_dir: Path, env: dict, order: list, value: int, source: str) -> None:
    loaded = load_spec(Path("cluster.yaml"), cli_var_order=order, environ=env)
    assert loaded.variables.values["port"] == value
    assert loaded.variables.sources["port"] == source
    assert loaded.spec.cluster.dashboard_port == value


def test_without_order_files_apply_before_flags(spec_dir: Path) -> None:
    loaded = load_spec(Path("cluster.yaml"), cli_vars=["port=8200"], var_files=[Path("a.yaml")], environ={})
    assert loaded.variables.values["port"] == 8200


def test_order_with_lists_must_agree(spec_dir: Path) -> None:
    loaded = load_spec(
        Path("cluster.yaml"),
        cli_vars=["port=8200"],
        var_files=[Path("a.yaml")],
        cli_var_order=[("var", "port=8200"), ("file", "a.yaml")],
        environ={},
    )
    assert loaded.variables.values["port"] == 8001
    with pytest.raises(ValueError):
        load_spec(Path("cluster.yaml"), cli_vars=["port=1"], cli_var_order=[("var", "port=2")], environ={})


def test_var_items_is_another_name_for_the_order(spec_dir: Path) -> None:
    loaded = load_spec(Path("cluster.yaml"), var_items=[("var", "port=8200")], environ={})
    assert loaded.variables.values["port"] == 8200


def test_undeclared_environment_variables_are_ignored(spec_dir: Path) -> None:
    # Like Terraform's TF_VAR_*: CI environments carry variables meant for other specs.
    loaded = load_spec(Path("cluster.yaml"), environ={"PROVISIONER_VAR_other": "x"})
    assert "other" not in loaded.variables.values


def test_uses_os_environ_by_default(spec_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_VAR_port", "8111")
    assert load_spec(Path("cluster.yaml")).variables.values["port"] == 8111


TEXT_VALUES = [
    ("number", "8000", 8000),
    ("number", "8000.0", 8000),
    ("number", "0.5", 0.5),
    ("number", " -3 ", -3),
    ("number", "1e3", 1000),
    ("bool", "true", True),
    ("bool", "FALSE", False),
    ("bool", "1", True),
    ("bool", "0", False),
    ("string", "8000", "8000"),
    ("string", "", ""),
    ("string", "a=b", "a=b"),
    ("list", '["a", "b"]', ["a", "b"]),
    ("list", "[a, 1]", ["a", 1]),
    ("list", "", []),
    ("map", '{"a": 1}', {"a": 1}),
    ("map", "{a: [1, 2]}", {"a": [1, 2]}),
    ("any", "8000", 8000),
    ("any", "true", True),
    ("any", "hello", "hello"),
    ("any", "", ""),
    ("any", "[1, 2]", [1, 2]),
    ("any", "a: [", "a: ["),
]


@pytest.mark.parametrize(("type_", "text", "value"), TEXT_VALUES)
def test_text_values_are_parsed_by_declared_type(type_: str, text: str, value: object) -> None:
    parsed = parse_text(text, type_)
    assert parsed == value and type(parsed) is type(value)


def test_cli_value_keeps_everything_after_the_first_equals() -> None:
    decls = {"dsn": VariableDecl(type="string")}
    resolved = resolve_variables(decls, spec_source="cluster.yaml", order=[("var", "dsn=a=b=c")], environ={})
    assert resolved.values["dsn"] == "a=b=c"


def test_null_default_makes_an_optional_variable() -> None:
    decls = {"n": VariableDecl.model_validate({"type": "number", "default": None})}
    resolved = resolve_variables(decls, spec_source="cluster.yaml", environ={})
    assert resolved.values == {"n": None}


def test_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"cluster.yaml": BASE_SPEC + textwrap.dedent("""\
        variables:
          port: {type: number, default: 9000}
          host: {type: string, default: 10.0.0.1}
          debug: {type: bool, default: true}
          tags: {type: map, default: {team: ml}}
          note: {type: string, default: "${var.port} stays"}
        cluster:
          dashboard_port: ${var.port}
          node_ip: ${ var.host }
        outputs:
          url: "http://${var.host}:${var.port}/"
          flag: "debug=${var.debug}"
          tags: ${var.tags}
          tags_text: "t=${var.tags}"
          head: ${local_ray_head.head.dashboard_url}
          mixed: "${var.host} ${local_ray_head.head.id}"
        """)})
    loaded = load_spec(Path("cluster.yaml"), environ={})
    spec = loaded.spec
    assert spec.cluster.dashboard_port == 9000
    assert spec.cluster.node_ip == "10.0.0.1"
    assert spec.outputs == {
        "url": "http://10.0.0.1:9000/",
        "flag": "debug=true",
        "tags": {"team": "ml"},
        "tags_text": 't={"team":"ml"}',
        "head": "${local_ray_head.head.dashboard_url}",
        "mixed": "10.0.0.1 ${local_ray_head.head.id}",
    }
    # `variables:` itself is never substituted
    assert loaded.variables.values["note"] == "${var.port} stays"


def test_sensitive_values_and_plan_digests() -> None:
    decls = {
        "token": VariableDecl(type="string", sensitive=True),
        "creds": VariableDecl(type="map", sensitive=True),
        "port": VariableDecl(type="number"),
    }
    order = [("var", "token=s3cret"), ("var", 'creds={"user": "u1", "pw": "p4ss"}'), ("var", "port=1")]
    resolved = resolve_variables(decls, spec_source="cluster.yaml", order=order, environ={})
    assert resolved.sensitive == {"token", "creds"}
    forms = resolved.sensitive_values()
    assert "s3cret" in forms and "p4ss" in forms and "u1" in forms
    assert "1" not in forms

    plan = resolved.for_plan()
    assert plan["port"] == 1
    assert plan["token"].startswith(SENSITIVE_PREFIX) and len(plan["token"]) == len(SENSITIVE_PREFIX) + 64
    assert "s3cret" not in repr(plan) and "p4ss" not in repr(plan)
    assert "s3cret" not in repr(resolved)
    assert resolved.redact("token is s3cret") == "token is (sensitive)"

    # the same values (from anywhere) pass; another value fails without showing either one
    resolved.check_against_plan(plan)
    again = resolve_variables(decls, spec_source="cluster.yaml", order=order, environ={})
    again.check_against_plan(plan)
    changed = resolve_variables(
        decls, spec_source="cluster.yaml", order=[*order, ("var", "token=other-secret")], environ={}
    )
    with pytest.raises(SpecError) as info:
        changed.check_against_plan(plan)
    text = f"{info.value}"
    assert "token" in text and "sensitive" in text
    assert "s3cret" not in text and "other-secret" not in text and "sha256" not in text


def test_plan_check_names_changed_plain_variables() -> None:
    decls = {"port": VariableDecl(type="number")}
    old = resolve_variables(decls, spec_source="c.yaml", order=[("var", "port=1")], environ={})
    new = resolve_variables(decls, spec_source="c.yaml", order=[("var", "port=2")], environ={})
    with pytest.raises(SpecError, match=r"port \(plan: 1, now: 2\)"):
        new.check_against_plan(old.for_plan())
    with pytest.raises(SpecError, match=r"extra \(no longer declared\)"):
        new.check_against_plan({**new.for_plan(), "extra": 1})
    with pytest.raises(SpecError, match=r"port \(not in the plan\)"):
        new.check_against_plan({})


def test_digest_differs_per_variable_name() -> None:
    resolved = ResolvedVariables(values={"a": "x", "b": "x"}, sensitive={"a", "b"})
    plan = resolved.for_plan()
    assert plan["a"] != plan["b"]


ARGV = [
    (["plan", "--var", "a=1", "--var-file", "f.yaml", "--var=b=2", "--var-file=g.json", "-f", "c.yaml"],
     [("var", "a=1"), ("file", "f.yaml"), ("var", "b=2"), ("file", "g.json")]),
    (["apply", "--json", "--var", "a=--x"], [("var", "a=--x")]),
    (["plan", "--var"], []),
    (["plan", "--", "--var", "a=1"], []),
]


@pytest.mark.parametrize(("argv", "expected"), ARGV)
def test_var_order_from_argv(argv: list[str], expected: list) -> None:
    assert var_order_from_argv(argv) == expected


def test_plan_values_are_json_safe(tmp_path: Path) -> None:
    import json

    (tmp_path / "v.yaml").write_text("when: 2024-01-01\n")
    decls = {"when": VariableDecl(type="any")}
    resolved = resolve_variables(decls, spec_source="c.yaml", order=[("file", str(tmp_path / "v.yaml"))], environ={})
    plan = resolved.for_plan()
    assert json.loads(json.dumps(plan)) == {"when": "2024-01-01"}
    resolved.check_against_plan(json.loads(json.dumps(plan)))

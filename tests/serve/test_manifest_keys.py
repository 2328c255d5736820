"""Our hard-coded manifest key sets equal the installed Ray's schema (noticed on a Ray upgrade).

provisioner.serve.manifest must not import Ray (the CLI would take seconds to start), so it
copies Ray's keys; this test is where a Ray upgrade that adds or removes a key shows up.
"""

from __future__ import annotations

import pytest

from provisioner.serve import manifest as ours

schema = pytest.importorskip("ray.serve.schema")
config = pytest.importorskip("ray.serve.config")

PAIRS = [
    ("ServeDeploySchema", ours.DEPLOY_KEYS, lambda: schema.ServeDeploySchema),
    ("ServeApplicationSchema", ours.APPLICATION_KEYS, lambda: schema.ServeApplicationSchema),
    ("DeploymentSchema", ours.DEPLOYMENT_KEYS, lambda: schema.DeploymentSchema),
    ("HTTPOptionsSchema", ours.HTTP_OPTIONS_KEYS, lambda: schema.HTTPOptionsSchema),
    ("gRPCOptionsSchema", ours.GRPC_OPTIONS_KEYS, lambda: schema.gRPCOptionsSchema),
    ("LoggingConfig", ours.LOGGING_CONFIG_KEYS, lambda: schema.LoggingConfig),
    ("TracingConfig", ours.TRACING_CONFIG_KEYS, lambda: schema.TracingConfig),
    ("ControllerOptions", ours.CONTROLLER_OPTIONS_KEYS, lambda: config.ControllerOptions),
]


def _fields(model) -> set[str]:
    fields = getattr(model, "model_fields", None) or model.__fields__
    return set(fields)


@pytest.mark.parametrize(("name", "keys", "model"), PAIRS, ids=[p[0] for p in PAIRS])
def test_key_sets_match_ray(name: str, keys: frozenset[str], model) -> None:
    theirs = _fields(model())
    assert set(keys) == theirs, (
        f"{name}: only in Ray {sorted(theirs - keys)}, only here {sorted(keys - theirs)};"
        " update provisioner/serve/manifest.py"
    )


def test_proxy_locations_match_ray() -> None:
    import typing

    annotation = ours.ServeManifest.model_fields["proxy_location"].annotation
    literal = next(a for a in typing.get_args(annotation) if typing.get_origin(a) is typing.Literal)
    assert set(typing.get_args(literal)) == {p.value for p in schema.ProxyLocation}


def test_ray_accepts_a_manifest_we_accept(tmp_path) -> None:
    from pathlib import Path

    text = """\
proxy_location: EveryNode
http_options: {host: 0.0.0.0, port: 8000, keep_alive_timeout_s: 60}
logging_config: {encoding: JSON, log_level: INFO}
applications:
  - name: hello
    route_prefix: /hello
    import_path: app:hello
    runtime_env: {working_dir: "s3://bucket/pkg.zip", env_vars: {A: "1"}}
    args: {greeting: hi}
    deployments:
      - name: Hello
        num_replicas: 2
        max_ongoing_requests: 10
        user_config: {x: 1}
        ray_actor_options: {num_cpus: 0.5}
  - name: auto
    route_prefix: /auto
    import_path: pkg.module.app
    deployments:
      - name: A
        num_replicas: auto
        autoscaling_config: {min_replicas: 1, max_replicas: 3}
"""
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    manifest = ours.load_manifest(Path(path), spec_source="cluster.yaml")
    schema.ServeDeploySchema.model_validate(manifest.to_config())

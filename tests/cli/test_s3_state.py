"""The CLI with its state in S3 (moto), as a user runs it: every command that reads or writes
the state, the lock, and bad state settings."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from state.backend import LockInfo
from state.document import parse_document, to_bytes
from state.s3 import S3Backend
from tests.checkpoint.servers import moto_server
from tests.cli.test_cli import MEMORY_SPEC, assert_clean_error, run

KEY = "provisioner/clitest/state.json"  # the default key of a spec named clitest


@pytest.fixture(scope="module")
def moto_env() -> Iterator[dict[str, str]]:
    with moto_server() as env:
        yield env


@pytest.fixture
def env(moto_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The environment of the CLI processes: boto3 pointed at moto, crash logs kept here."""
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("AWS_")}
    return {**environ, **moto_env, "PROVISIONER_LOG_DIR": str(tmp_path)}


@pytest.fixture
def s3(env: dict[str, str]) -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
    ).client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"tfstate-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def spec_dir(root: Path, state: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cluster.yaml").write_text(MEMORY_SPEC + state)
    return root


def cli(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run(workdir, *args, env=env)


def ok(result: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert result.returncode == code, result.stdout + result.stderr
    return result


def test_every_command_with_state_in_s3(tmp_path: Path, env: dict[str, str], s3: Any,
                                        bucket: str) -> None:
    workdir = spec_dir(tmp_path / "s3", f"state: {{backend: s3, bucket: {bucket}}}\n")
    ok(cli(workdir, env, "apply", "--auto-approve"))
    ok(cli(workdir, env, "plan", "--detailed-exitcode"))

    # The object is the canonical document, the same whatever prints it or wherever it is kept.
    raw = s3.get_object(Bucket=bucket, Key=KEY)["Body"].read()
    document = parse_document(raw, source=KEY)
    assert to_bytes(document) == raw
    assert json.loads(ok(cli(workdir, env, "show", "--json")).stdout) == json.loads(raw)
    local = spec_dir(tmp_path / "local", "")
    ok(run(local, "apply", "--auto-approve"))
    twin = parse_document((local / ".provisioner" / "state.json").read_bytes(), source="local")
    assert document.outputs == twin.outputs  # (serials differ: writes are group-committed)
    assert {a: (r.type, r.dependencies) for a, r in document.resources.items()} == \
        {a: (r.type, r.dependencies) for a, r in twin.resources.items()}
    # Nothing of the state is kept locally; the run's own files are next to the spec.
    assert not (workdir / ".provisioner" / "state.json").exists()
    assert (workdir / ".provisioner" / "memory" / document.lineage).is_dir()
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == [KEY]

    assert json.loads(ok(cli(workdir, env, "output", "--json")).stdout) == {
        "groups": ["net", "node"]}
    assert json.loads(ok(cli(workdir, env, "state", "list", "--json")).stdout) == [
        "memory_resource.net", "memory_resource.node[0]", "memory_resource.node[1]"]
    assert "memory_resource.net" in ok(cli(workdir, env, "state", "show",
                                           "memory_resource.net")).stdout
    ok(cli(workdir, env, "status"))

    # A saved plan applies against the S3 state, and only while it has not moved.
    plan_file = workdir / "p.plan"
    ok(cli(workdir, env, "plan", "--var", "n=3", "--out", str(plan_file)))
    ok(cli(workdir, env, "apply", str(plan_file)))
    assert_clean_error(cli(workdir, env, "apply", str(plan_file)), "state")

    # A lock held by another run: exit 3 naming it; force-unlock removes it.
    held = LockInfo.for_operation("apply", ttl_s=300)
    held.holder = "alice@ci-runner-7 pid 4242"
    S3Backend(bucket, KEY, client=s3).acquire_lock(held)
    assert_clean_error(cli(workdir, env, "plan", "--var", "n=3"), "alice@ci-runner-7",
                       f"force-unlock {held.id}", code=3)
    assert held.id in ok(cli(workdir, env, "force-unlock", held.id)).stdout
    ok(cli(workdir, env, "plan", "--var", "n=3", "--detailed-exitcode"))

    ok(cli(workdir, env, "destroy", "--auto-approve", "--var", "n=3"))
    after = parse_document(s3.get_object(Bucket=bucket, Key=KEY)["Body"].read(), source=KEY)
    assert after.resources == {} and after.lineage == document.lineage
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == [KEY]
    assert not list(tmp_path.glob("provisioner-crash-*"))


BAD_STATE = {
    "no-bucket": ("state: {backend: s3}\n", ["cluster.yaml", "state.bucket", "is required"]),
    "path-with-s3": ("state: {backend: s3, bucket: tfstate, path: x.json}\n",
                     ["cluster.yaml", "state.path", "local only"]),
    "bucket-with-local": ("state: {bucket: tfstate}\n", ["cluster.yaml", "state.bucket",
                                                         "s3 and gcs only"]),
    "bad-bucket": ("state: {backend: s3, bucket: s3://tfstate}\n",
                   ["cluster.yaml", "state.bucket", "an S3 bucket name"]),
    "unknown-backend": ("state: {backend: azure}\n", ["cluster.yaml", "state.backend",
                                                      "'s3' or 'gcs'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_STATE))
def test_bad_state_settings_are_clear_errors(tmp_path: Path, env: dict[str, str],
                                             case: str) -> None:
    state, fragments = BAD_STATE[case]
    workdir = spec_dir(tmp_path, state)
    for command in (["plan"], ["apply", "--auto-approve"], ["output"], ["state", "list"],
                    ["force-unlock", "x"], ["destroy", "--auto-approve"]):
        assert_clean_error(cli(workdir, env, *command), *fragments)
    assert not (workdir / ".provisioner").exists()


def test_a_missing_bucket_is_a_clear_error(tmp_path: Path, env: dict[str, str]) -> None:
    workdir = spec_dir(tmp_path, "state: {backend: s3, bucket: no-such-tfstate}\n")
    for command in (["plan"], ["apply", "--auto-approve"], ["output"]):
        assert_clean_error(cli(workdir, env, *command), "no-such-tfstate", "does not exist",
                           "aws s3 mb")
    assert not list(tmp_path.glob("provisioner-crash-*"))

"""The CLI with its state in Cloud Storage (the GCS emulator behind the layer that enforces
preconditions, see tests/state/gcs_preconditions.py), as a user runs it: apply, plan, the lock,
destroy, bad state settings and a missing bucket."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.events import Event
from provisioner.workspace import VarArgs, Workspace
from state.backend import LockInfo
from state.document import parse_document, to_bytes
from state.gcs import GCSBackend
from tests.checkpoint.servers import GcsServer, gcs_server
from tests.cli.test_cli import assert_clean_error, run
from tests.cli.test_s3_state import ok, spec_dir

KEY = "provisioner/clitest/state.json"  # the default key of a spec named clitest


@pytest.fixture(scope="module")
def server() -> Iterator[GcsServer]:
    with gcs_server() as running:
        yield running


@pytest.fixture
def env(server: GcsServer, tmp_path: Path) -> dict[str, str]:
    """The environment of the CLI processes: google-cloud-storage pointed at the emulator, no
    other Google settings, crash logs kept here."""
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith(("GOOGLE_", "STORAGE_EMULATOR_", "CLOUDSDK_"))}
    return {**environ, **server.env, "PROVISIONER_LOG_DIR": str(tmp_path)}


@pytest.fixture
def bucket(server: GcsServer) -> str:
    name = f"tfstate-{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    return name


def cli(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run(workdir, *args, env=env)


def objects(server: GcsServer, bucket: str) -> list[str]:
    return sorted(blob.name for blob in server.client().list_blobs(bucket))


def stored(server: GcsServer, bucket: str) -> bytes:
    return server.client().bucket(bucket).blob(KEY).download_as_bytes()


def test_apply_plan_lock_and_destroy_with_state_in_gcs(tmp_path: Path, env: dict[str, str],
                                                       server: GcsServer, bucket: str) -> None:
    workdir = spec_dir(tmp_path, f"state: {{backend: gcs, bucket: {bucket}}}\n")
    ok(cli(workdir, env, "apply", "--auto-approve"))
    ok(cli(workdir, env, "plan", "--detailed-exitcode"))
    ok(cli(workdir, env, "plan", "--detailed-exitcode", "--var", "n=3"), code=2)

    # The object is the canonical document; nothing else is left in the bucket (no lock, no
    # probe) and nothing of the state is kept locally.
    raw = stored(server, bucket)
    document = parse_document(raw, source=KEY)
    assert to_bytes(document) == raw
    assert json.loads(ok(cli(workdir, env, "show", "--json")).stdout) == json.loads(raw)
    assert json.loads(ok(cli(workdir, env, "output", "--json")).stdout) == {
        "groups": ["net", "node"]}
    assert objects(server, bucket) == [KEY]
    assert not (workdir / ".provisioner" / "state.json").exists()
    assert (workdir / ".provisioner" / "memory" / document.lineage).is_dir()

    # A lock held by another run: exit 3 naming it; force-unlock removes it.
    held = LockInfo.for_operation("apply", ttl_s=300)
    held.holder = "alice@ci-runner-7 pid 4242"
    GCSBackend(bucket, KEY, client=server.client()).acquire_lock(held)
    for command in (["plan"], ["apply", "--auto-approve", "--var", "n=3"]):
        assert_clean_error(cli(workdir, env, *command), "alice@ci-runner-7",
                           f"force-unlock {held.id}", code=3)
    assert parse_document(stored(server, bucket), source=KEY) == document  # nothing changed
    assert held.id in ok(cli(workdir, env, "force-unlock", held.id)).stdout

    ok(cli(workdir, env, "apply", "--auto-approve", "--var", "n=3"))
    ok(cli(workdir, env, "destroy", "--auto-approve", "--var", "n=3"))
    after = parse_document(stored(server, bucket), source=KEY)
    assert after.resources == {} and after.lineage == document.lineage
    assert after.serial > document.serial
    assert objects(server, bucket) == [KEY]
    assert not list(tmp_path.glob("provisioner-crash-*"))


BAD_STATE = {
    "no-bucket": ("state: {backend: gcs}\n", ["state.bucket", "is required"]),
    "region-with-gcs": ("state: {backend: gcs, bucket: tfstate, region: europe-west1}\n",
                        ["state.region", "s3 only"]),
    "bad-bucket": ("state: {backend: gcs, bucket: gs://tfstate}\n",
                   ["state.bucket", "a Cloud Storage bucket name"]),
    "bad-project": ("state: {backend: gcs, bucket: tfstate, project: My Project}\n",
                    ["state.project", "a project id"]),
}


@pytest.mark.parametrize("case", sorted(BAD_STATE))
def test_bad_state_settings_are_clear_errors(tmp_path: Path, env: dict[str, str],
                                             case: str) -> None:
    state, fragments = BAD_STATE[case]
    workdir = spec_dir(tmp_path, state)
    for command in (["plan"], ["apply", "--auto-approve"], ["force-unlock", "x"]):
        assert_clean_error(cli(workdir, env, *command), "cluster.yaml", *fragments)
    assert not (workdir / ".provisioner").exists()


def test_a_missing_bucket_is_a_clear_error(tmp_path: Path, env: dict[str, str]) -> None:
    workdir = spec_dir(tmp_path, "state: {backend: gcs, bucket: no-such-tfstate}\n")
    for command in (["plan"], ["apply", "--auto-approve"], ["output"]):
        assert_clean_error(cli(workdir, env, *command), "gs://no-such-tfstate/" + KEY,
                           "does not exist", "gcloud storage buckets create")
    assert not list(tmp_path.glob("provisioner-crash-*"))


def test_the_default_checkpoint_store_is_beside_the_state(tmp_path: Path) -> None:
    workdir = spec_dir(tmp_path, "state: {backend: gcs, bucket: tfstate, key: team/c/s.json, "
                                 "project: team-proj-1}\n")
    events: list[Event] = []
    workspace = Workspace(workdir / "cluster.yaml", VarArgs(), events.append)
    backend = workspace.backend()
    assert isinstance(backend, GCSBackend) and backend.project == "team-proj-1"
    assert backend.describe() == "gs://tfstate/team/c/s.json"
    assert workspace.checkpoint_store().uri == "gs://tfstate/team/c/checkpoints"

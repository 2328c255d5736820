"""Every checkpoint store against a real backend: a directory, moto's S3 server, a GCS emulator,
and the custom SQLite store of examples/checkpoint_store; then the checkpoint layout on top of
each: round trip, torn writes, damage, another lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.checkpoint import CheckpointError, CheckpointStore, NoCheckpointError, open_store
from provisioner.checkpoint.layout import (
    LATEST,
    list_checkpoints,
    load_checkpoint,
    manifest_key,
    restore_manifest,
    write_checkpoint,
)
from tests.checkpoint.servers import gcs_emulator, moto_s3

ROOT = Path(__file__).resolve().parents[2]
LINEAGE = "11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def s3_env():
    with moto_s3("ckpt") as env:
        yield env


@pytest.fixture(scope="module")
def gcs_env():
    with gcs_emulator("ckpt") as env:
        yield env


@pytest.fixture(params=["file", "s3", "gs", "custom"])
def store(request, tmp_path, monkeypatch) -> CheckpointStore:
    kind = request.param
    if kind == "file":
        return open_store("file://checkpoints", tmp_path)
    if kind == "s3":
        for key, value in request.getfixturevalue("s3_env").items():
            monkeypatch.setenv(key, value)
        return open_store(f"s3://ckpt/{tmp_path.name}", tmp_path)
    if kind == "gs":
        for key, value in request.getfixturevalue("gcs_env").items():
            monkeypatch.setenv(key, value)
        return open_store(f"gs://ckpt/{tmp_path.name}", tmp_path)
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "checkpoint_store"))
    return open_store(f"custom://sqlite_store.SQLiteStore/{tmp_path / 'ckpt.db'}", tmp_path)


def package(tmp_path: Path, name: str = "pkg_" + "a" * 32 + ".zip", data: bytes = b"zip") -> Path:
    path = tmp_path / "local" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def manifest(name: str) -> dict:
    return {"proxy_location": "EveryNode", "applications": [
        {"name": "hello", "route_prefix": "/hello", "import_path": "hello:app",
         "runtime_env": {"working_dir": name}},
        {"name": "remote", "import_path": "m:app",
         "runtime_env": {"working_dir": "https://example.invalid/code.zip"}}]}


def test_keys_bytes_and_listing(store) -> None:
    assert store.read("missing/key") is None
    store.write("a/b/one", b"\x00\x01binary")
    store.write("a/two", b"2")
    store.write("a/two", b"22")  # replaced
    store.write("other", b"x")
    assert store.read("a/b/one") == b"\x00\x01binary"
    assert store.read("a/two") == b"22"
    assert sorted(store.list("a/")) == ["a/b/one", "a/two"]
    assert store.list("nothing/") == []


def test_checkpoint_round_trip(store, tmp_path) -> None:
    pkg = package(tmp_path)
    written = write_checkpoint(store, cluster="demo", lineage=LINEAGE, serial=7,
                               outputs={"lb_url": "http://lb"}, manifest=manifest(pkg.name),
                               packages={pkg.name: pkg})
    checkpoint, loaded = load_checkpoint(store, None, LINEAGE)
    assert checkpoint == written and checkpoint.apps == ["hello", "remote"]
    # working_dirs point into the store; a remote URI stays as the user wrote it
    apps = {app["name"]: app for app in loaded["applications"]}
    assert apps["hello"]["runtime_env"]["working_dir"] == store.location(f"packages/{pkg.name}")
    assert apps["remote"]["runtime_env"]["working_dir"] == "https://example.invalid/code.zip"
    restored = restore_manifest(store, checkpoint, loaded, tmp_path / "restored")
    text = restored.read_text()
    assert str(tmp_path / "restored" / pkg.name) in text
    assert (tmp_path / "restored" / pkg.name).read_bytes() == b"zip"
    assert [c.id for c in list_checkpoints(store)] == [written.id]


def test_latest_is_written_last_so_a_torn_write_is_never_used(store, tmp_path) -> None:
    pkg = package(tmp_path)
    first = write_checkpoint(store, cluster="demo", lineage=LINEAGE, serial=1, outputs={},
                             manifest=manifest(pkg.name), packages={pkg.name: pkg})

    class Torn(CheckpointStore):  # dies when it comes to the pointer
        uri = store.uri

        def read(self, key):
            return store.read(key)

        def write(self, key, data):
            if key == LATEST:
                raise CheckpointError("killed")
            store.write(key, data)

        def list(self, prefix):
            return store.list(prefix)

        def location(self, key):
            return store.location(key)

    with pytest.raises(CheckpointError):
        write_checkpoint(Torn(), cluster="demo", lineage=LINEAGE, serial=2, outputs={},
                         manifest=manifest(pkg.name), packages={pkg.name: pkg})
    assert load_checkpoint(store, None, LINEAGE)[0].id == first.id
    assert len(list_checkpoints(store)) == 2  # the torn one is listed, never "latest"


def test_damaged_missing_and_foreign_checkpoints_are_refused(store, tmp_path) -> None:
    pkg = package(tmp_path)
    with pytest.raises(NoCheckpointError, match="no checkpoint in"):
        load_checkpoint(store, None, LINEAGE)
    written = write_checkpoint(store, cluster="demo", lineage=LINEAGE, serial=3, outputs={},
                               manifest=manifest(pkg.name), packages={pkg.name: pkg})
    with pytest.raises(NoCheckpointError, match="no checkpoint nope"):
        load_checkpoint(store, "nope", LINEAGE)
    with pytest.raises(NoCheckpointError, match="another deployment"):
        load_checkpoint(store, None, "99999999-0000-0000-0000-000000000000")
    store.write(f"packages/{pkg.name}", b"bitrot")
    checkpoint, loaded = load_checkpoint(store, written.id, LINEAGE)
    with pytest.raises(NoCheckpointError, match="damaged"):
        restore_manifest(store, checkpoint, loaded, tmp_path / "restored")
    good = store.read(manifest_key(written.id))
    store.write(manifest_key(written.id), good.replace(b"hello:app", b"evil:app"))
    with pytest.raises(NoCheckpointError, match="damaged"):
        load_checkpoint(store, written.id, LINEAGE)
    store.write(LATEST, b"{not json")
    with pytest.raises(NoCheckpointError, match="corrupt"):
        load_checkpoint(store, None, LINEAGE)


@pytest.mark.parametrize("uri, message", [
    ("ftp://x", "unknown scheme 'ftp'"),
    ("nothing", "expected <scheme>://<location>"),
    ("s3:///prefix", "expected s3://<bucket>/<prefix>"),
    ("custom://nodots/path", "expected custom://package.module.Class/path"),
    ("custom://no_such_module_xyz.Store/p", "cannot load"),
    ("custom://json.JSONDecoder/p", "not a subclass"),
])
def test_bad_store_uris_say_what_is_expected(uri, message, tmp_path) -> None:
    with pytest.raises(CheckpointError, match=message):
        open_store(uri, tmp_path)


def test_file_store_keys_cannot_leave_the_store(tmp_path) -> None:
    store = open_store("file://ckpt", tmp_path)
    with pytest.raises(CheckpointError, match="leaves the store"):
        store.write("../escape", b"x")
    assert not (tmp_path / "escape").exists()


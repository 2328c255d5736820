"""Checkpoints in a store: how they are laid out, written, listed, verified and restored.

Keys, relative to the store's root::

    packages/pkg_<hex>.zip               code packages, named by content, shared by checkpoints
    checkpoints/<id>/manifest.yaml       the Serve config as deployed; working_dirs point at
                                         packages/ in this store
    checkpoints/<id>/checkpoint.json     what the checkpoint holds and the sha256 of each file
    latest                               {"id", "lineage"} of the newest checkpoint

Order of writes: packages, manifest, checkpoint.json, then ``latest``. A run killed half way
leaves at most an unreferenced directory: ``latest`` still names the previous, whole checkpoint.
Reading verifies every sha256, so a damaged file is reported, never deployed.

Ids are ``<state serial, 8 digits>-<UTC time>``: they sort in the order they were written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from provisioner.checkpoint.stores import CheckpointStore, NoCheckpointError

FORMAT = 1
LATEST = "latest"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    id: str
    lineage: str
    serial: int
    created_at: str
    cluster: str
    apps: list[str]
    outputs: dict[str, Any]
    manifest_sha256: str
    packages: dict[str, str] = field(default_factory=dict)  # name -> sha256 of the zip
    format: int = FORMAT

    @classmethod
    def parse(cls, raw: bytes, where: str) -> "Checkpoint":
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            return cls(**data)
        except (ValueError, TypeError, AttributeError) as error:
            raise NoCheckpointError(f"checkpoint {where} is corrupt: {error}",
                                    hint="recover from another one: provisioner checkpoint list"
                                    ) from None

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()


def manifest_key(checkpoint_id: str) -> str:
    return f"checkpoints/{checkpoint_id}/manifest.yaml"


def meta_key(checkpoint_id: str) -> str:
    return f"checkpoints/{checkpoint_id}/checkpoint.json"


def package_key(name: str) -> str:
    return f"packages/{name}"


def new_id(serial: int, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{serial:08d}-{now.strftime('%Y%m%dT%H%M%S%fZ')}"


def manifest_digest(manifest: dict[str, Any]) -> str:
    """Digest of a manifest whose working_dirs are package names: equal apps, equal digest
    (whichever store they are written to)."""
    return _sha256(json.dumps(manifest, sort_keys=True).encode())


def write_checkpoint(store: CheckpointStore, *, cluster: str, lineage: str, serial: int,
                     outputs: dict[str, Any], manifest: dict[str, Any],
                     packages: dict[str, Path]) -> Checkpoint:
    """Write one checkpoint. ``manifest`` is a Serve config whose apps' ``working_dir`` are
    package names (keys of ``packages``, the local zip files)."""
    sums: dict[str, str] = {}
    for name, path in sorted(packages.items()):
        data = path.read_bytes()
        sums[name] = _sha256(data)
        stored = store.read(package_key(name))
        if stored is None or _sha256(stored) != sums[name]:
            store.write(package_key(name), data)
    text = yaml.safe_dump(_with_working_dirs(manifest, lambda name: store.location(
        package_key(name))), sort_keys=True).encode()
    checkpoint = Checkpoint(
        id=new_id(serial), lineage=lineage, serial=serial,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), cluster=cluster,
        apps=sorted(app["name"] for app in manifest.get("applications", [])),
        outputs=outputs, manifest_sha256=_sha256(text), packages=sums)
    store.write(manifest_key(checkpoint.id), text)
    store.write(meta_key(checkpoint.id), checkpoint.to_bytes())
    store.write(LATEST, json.dumps({"id": checkpoint.id, "lineage": lineage}).encode())
    return checkpoint


def list_checkpoints(store: CheckpointStore) -> list[Checkpoint | str]:
    """Every checkpoint in the store, oldest first; an unreadable one is listed by its id."""
    found: list[Checkpoint | str] = []
    ids = sorted({PurePosixPath(key).parts[1] for key in store.list("checkpoints/")
                  if len(PurePosixPath(key).parts) == 3})
    for checkpoint_id in ids:
        raw = store.read(meta_key(checkpoint_id))
        try:
            found.append(Checkpoint.parse(raw, checkpoint_id) if raw else checkpoint_id)
        except NoCheckpointError:
            found.append(checkpoint_id)
    return found


def latest_id(store: CheckpointStore) -> str | None:
    raw = store.read(LATEST)
    if raw is None:
        return None
    try:
        return str(json.loads(raw)["id"])
    except (ValueError, KeyError, TypeError):
        raise NoCheckpointError(f"{store.location(LATEST)} is corrupt",
                                hint="name a checkpoint with --checkpoint ID "
                                "(see: provisioner checkpoint list)") from None


def load_checkpoint(store: CheckpointStore, checkpoint_id: str | None,
                    lineage: str | None) -> tuple[Checkpoint, dict[str, Any]]:
    """The checkpoint ``checkpoint_id`` (default: the latest) and its manifest, verified;
    :class:`NoCheckpointError` if there is none, it is damaged or it belongs to another
    lineage (another deployment's state)."""
    hint = "list them with: provisioner checkpoint list"
    if checkpoint_id is None:
        checkpoint_id = latest_id(store)
        if checkpoint_id is None:
            raise NoCheckpointError(
                f"no checkpoint in {store.uri}",
                hint="a checkpoint is written by each apply that changes the Serve applications")
    raw = store.read(meta_key(checkpoint_id))
    if raw is None:
        raise NoCheckpointError(f"no checkpoint {checkpoint_id} in {store.uri}", hint=hint)
    checkpoint = Checkpoint.parse(raw, checkpoint_id)
    if lineage is not None and checkpoint.lineage != lineage:
        raise NoCheckpointError(
            f"checkpoint {checkpoint_id} belongs to another deployment (lineage "
            f"{checkpoint.lineage}, this state has {lineage})",
            hint="check serve.checkpoint_store: two deployments must not share one store prefix")
    text = store.read(manifest_key(checkpoint_id))
    if text is None or _sha256(text) != checkpoint.manifest_sha256:
        raise NoCheckpointError(
            f"checkpoint {checkpoint_id}: its manifest is "
            + ("missing" if text is None else "damaged (sha256 differs)"), hint=hint)
    try:
        manifest = yaml.safe_load(text)
        if not isinstance(manifest, dict):
            raise ValueError("not a mapping")
    except (yaml.YAMLError, ValueError) as error:
        raise NoCheckpointError(f"checkpoint {checkpoint_id}: manifest unreadable: {error}",
                                hint=hint) from None
    return checkpoint, manifest


def restore_manifest(store: CheckpointStore, checkpoint: Checkpoint, manifest: dict[str, Any],
                     directory: Path) -> Path:
    """Fetch the checkpoint's packages into ``directory`` (verified) and write a Serve config
    there whose working_dirs are those local files; return its path."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, expected in sorted(checkpoint.packages.items()):
        target = directory / name
        if target.is_file() and _sha256(target.read_bytes()) == expected:
            continue
        data = store.read(package_key(name))
        if data is None or _sha256(data) != expected:
            raise NoCheckpointError(
                f"checkpoint {checkpoint.id}: package {name} is "
                + ("missing" if data is None else "damaged (sha256 differs)"),
                hint="recover from another one: provisioner checkpoint list")
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)

    def local(uri: str) -> str:
        name = PurePosixPath(uri).name
        if name not in checkpoint.packages:
            raise NoCheckpointError(f"checkpoint {checkpoint.id}: working_dir {uri} is not one "
                                    "of its packages")
        return str(directory / name)

    restored = _with_working_dirs(manifest, local, only=store.location(package_key("")))
    path = directory / f"serve-{checkpoint.id}.yaml"
    path.write_text(yaml.safe_dump(restored, sort_keys=True))
    return path


def _with_working_dirs(manifest: dict[str, Any], rewrite, only: str | None = None
                       ) -> dict[str, Any]:
    """``manifest`` with each app's working_dir passed through ``rewrite`` (those starting with
    ``only``, when given; a working_dir the user gave as a remote URI stays as it is)."""
    apps = []
    for app in manifest.get("applications", []):
        runtime_env = dict(app.get("runtime_env") or {})
        working_dir = runtime_env.get("working_dir")
        if isinstance(working_dir, str) and (only is None and "://" not in working_dir
                                             or only is not None and working_dir.startswith(only)):
            runtime_env["working_dir"] = rewrite(working_dir)
            app = {**app, "runtime_env": runtime_env}
        apps.append(app)
    return {**manifest, "applications": apps}

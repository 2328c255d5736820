"""What a checkpoint holds, taken from the state: the Serve applications as deployed.

The state, not the spec, is the source: a checkpoint must describe what runs, also when the
spec's manifest was edited after the last apply. Each ``serve_app`` record becomes one
application of a standard Serve config (``serve deploy`` could take it); its package is found
where the apply built it (the local package cache, or the local head's package directory), or
built again from its recorded source if that still packs to the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioner.checkpoint.layout import manifest_digest
from provisioner.checkpoint.stores import CheckpointError
from state.document import StateDocument

APP_TYPE = "serve_app"


def deployed_apps(document: StateDocument) -> list[dict[str, Any]]:
    return [record.attributes for record in sorted(document.resources.values(),
                                                   key=lambda r: r.id)
            if record.type == APP_TYPE and record.status == "ready"]


def capture(document: StateDocument, cache_dir: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """(manifest with package names as working_dirs, package name -> local zip file)."""
    from provisioner.providers.serve_app import app_config

    apps = deployed_apps(document)
    manifest: dict[str, Any] = {"applications": []}
    packages: dict[str, Path] = {}
    for attributes in apps:
        # The working_dir stays as recorded (a package name, or the user's URI): app_config
        # would turn a package name into a path on the head.
        runtime_env = dict(attributes.get("runtime_env") or {})
        working_dir = runtime_env.pop("working_dir", None)
        config = app_config({**attributes, "runtime_env": runtime_env})
        if isinstance(working_dir, str):
            config.setdefault("runtime_env", {})["working_dir"] = working_dir
            if "://" not in working_dir:
                packages[working_dir] = _find_package(working_dir, attributes, cache_dir)
        manifest["applications"].append(config)
    if apps:
        first = apps[0]
        if first.get("proxy_location"):
            manifest["proxy_location"] = first["proxy_location"]
        if first.get("http_options"):
            manifest["http_options"] = dict(first["http_options"])
    manifest["applications"].sort(key=lambda app: app["name"])
    return manifest, packages


def _find_package(name: str, attributes: dict[str, Any], cache_dir: Path) -> Path:
    candidates = [cache_dir / name]
    if attributes.get("package_dir"):
        candidates.append(Path(attributes["package_dir"]) / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    source = attributes.get("package_source")
    if source and Path(source).exists():
        from provisioner.errors import SpecError
        from provisioner.serve.package import build_package

        try:
            built = build_package(Path(source), cache_dir)
        except SpecError as error:
            raise CheckpointError(f"cannot pack {source} for the checkpoint: {error}") from None
        if built.name == name:
            return built
    raise CheckpointError(
        f"package {name} of application {attributes.get('name')} is not on this machine any "
        f"more (looked in {', '.join(str(c.parent) for c in candidates)})",
        hint="run apply again from the machine that deployed it")


def checkpoint_if_changed(document: StateDocument, store, cache_dir: Path, cluster: str,
                          apps_changed: bool):
    """Write a checkpoint of ``document`` unless the latest one recorded in it already holds
    the same applications in the same store. Returns (checkpoint, manifest digest), or None
    when none was needed.

    ``apps_changed``: the apply changed a ``serve_app``. Without that, and with a checkpoint
    recorded, nothing is read at all (a no-op apply stays fast).
    """
    from provisioner.checkpoint.layout import write_checkpoint

    recorded = document.history.get("checkpoint") or {}
    if not apps_changed and recorded.get("store") == store.uri:
        return None
    if not deployed_apps(document):
        return None
    manifest, packages = capture(document, cache_dir)
    digest = manifest_digest(manifest)
    if recorded.get("store") == store.uri and recorded.get("manifest_digest") == digest:
        return None
    return write_checkpoint(store, cluster=cluster, lineage=document.lineage,
                            serial=document.serial, outputs=dict(document.outputs),
                            manifest=manifest, packages=packages), digest

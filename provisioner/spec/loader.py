"""Loading ``cluster.yaml``: read, resolve variables, substitute, validate, load the manifest.

The order matters for the messages: unknown top-level keys first (a misspelt ``varaibles:``
explains everything after it), then the variable declarations and values, then substitution,
then the provider's model, then the files the spec points at. Every failure is a
:class:`SpecError` naming the file and the key path; nothing from pydantic or PyYAML escapes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pydantic import Field, ValidationError

from provisioner.errors import SpecError
from provisioner.spec.base import SpecModel
from provisioner.spec.interpolate import interpolate
from provisioner.spec.models import (
    DEFAULT_STATE_KEY,
    SPEC_VERSION,
    Spec,
    StateConfig,
    VariableDecl,
    VarName,
    spec_model,
)
from provisioner.spec.problems import (
    did_you_mean,
    format_path,
    show,
    spec_error_from_validation,
    unknown_key_message,
)
from provisioner.spec.providers import PROVIDERS
from provisioner.spec.variables import ResolvedVariables, VarArg, resolve_variables
from provisioner.spec.yamlfile import LineMap, read_yaml_file

if TYPE_CHECKING:
    # provisioner.serve.manifest imports provisioner.spec's helpers: import it at call time.
    from provisioner.serve.manifest import ServeManifest

DEFAULT_SPEC_NAME = "cluster.yaml"
_REDACT_MIN = 4  # shorter secrets are hidden by path only; replacing "1" everywhere garbles text


@dataclass(frozen=True)
class StateRef:
    """Where a spec's state lives, resolved: ``path`` for the local backend, ``bucket`` and
    ``key`` for s3 and gcs, with ``region`` (s3) or ``project`` (gcs). ``data_dir`` holds the
    local files of every run (package cache, restored checkpoints, the memory provider's
    resources): the state file's directory, or ``.provisioner/`` next to the spec when the state
    is remote."""

    backend: str
    data_dir: Path  # absolute
    path: Path | None = None  # absolute
    bucket: str | None = None
    key: str | None = None
    region: str | None = None
    project: str | None = None

    @property
    def scheme(self) -> str | None:
        """The URI scheme of a remote state's bucket (``s3``, ``gs``); None for a local file."""
        return {"s3": "s3", "gcs": "gs"}.get(self.backend)

    def describe(self) -> str:
        if self.scheme is not None:
            return f"{self.scheme}://{self.bucket}/{self.key}"
        return str(self.path)


def _state_ref(base_dir: Path, source: str, name: str, config: StateConfig) -> StateRef:
    if config.backend != "local":
        assert config.bucket is not None  # StateConfig.problems
        return StateRef(backend=config.backend, data_dir=base_dir / ".provisioner",
                        bucket=config.bucket, key=config.key or DEFAULT_STATE_KEY.format(name=name),
                        region=config.region, project=config.project)
    path, _ = _relative_file(base_dir, source, config.path)
    return StateRef(backend="local", data_dir=path.parent, path=path)


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec with everything it points at."""

    path: Path  # absolute path of the spec file
    source: str  # the spec file as the user named it, for messages
    base_dir: Path  # absolute directory of the spec file; relative paths start here
    spec: Spec  # variables substituted; an instance of spec_model(spec.provider)
    variables: ResolvedVariables
    manifest: "ServeManifest | None"
    manifest_path: Path | None  # absolute
    state: StateRef
    module_dir: Path | None  # absolute; None = the built-in module of the provider

    @property
    def state_path(self) -> Path | None:
        """The local state file (None when the state is remote)."""
        return self.state.path


class _Declarations(SpecModel):
    variables: dict[VarName, VariableDecl] = Field(default_factory=dict)


def _at(lines: LineMap, parts: Sequence[str | int]) -> str:
    line = lines.line_of(parts)
    return f" (line {line})" if line else ""


def _locate(path: Path) -> tuple[Path, str]:
    """The spec file for ``path`` (a file, or a directory holding cluster.yaml) and its name."""
    if path.is_dir():
        path = path / DEFAULT_SPEC_NAME
    if not path.is_file():
        if path.name == DEFAULT_SPEC_NAME:
            where = str(path.parent) if str(path.parent) != "." else "the current directory"
            raise SpecError(
                f"no {DEFAULT_SPEC_NAME} in {where}; pass -f FILE",
                source=str(path),
                hint="run in the directory of your cluster.yaml, or name the spec with -f",
            )
        what = "is a directory" if path.exists() else "not found"
        raise SpecError(f"spec file {what}", source=str(path), hint="name the spec with -f FILE")
    return path, str(path)


def _var_order(
    cli_vars: Sequence[str], var_files: Sequence[Path], order: Sequence[VarArg] | None
) -> list[VarArg]:
    if order is None:
        # No interleaving known: files first, then flags (flags win), each in given order.
        return [("file", str(f)) for f in var_files] + [("var", v) for v in cli_vars]
    if cli_vars or var_files:
        given = sorted([("file", str(Path(f))) for f in var_files] + [("var", v) for v in cli_vars])
        ordered = sorted((kind, str(Path(v)) if kind == "file" else v) for kind, v in order)
        if given != ordered:
            raise ValueError("cli_var_order does not list the same --var/--var-file as cli_vars/var_files")
    return [(kind, value) for kind, value in order]


def _check_top_level(data: Any, source: str, lines: LineMap) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SpecError(
            f"expected a mapping of spec keys (version, name, provider, cluster...), got {show(data)}",
            source=source,
        )
    allowed = list(Spec.model_fields)
    for key in data:
        if key not in allowed:
            message, hint = unknown_key_message(key, allowed)
            raise SpecError(
                message + _at(lines, (key,)), source=source, path=format_path((str(key),)), hint=hint
            )
    return data


def _declarations(data: dict[str, Any], source: str, lines: LineMap) -> dict[str, VariableDecl]:
    raw = {"variables": data.get("variables") or {}}
    try:
        decls = _Declarations.model_validate(raw).variables
    except ValidationError as exc:
        raise spec_error_from_validation(
            exc, source=source, data=raw, root=_Declarations, lines=lines
        ) from None
    for name, decl in decls.items():
        for rel, message in decl.problems():
            parts = ("variables", name, *rel)
            raise SpecError(message + _at(lines, parts), source=source, path=format_path(parts))
    return decls


def _check_version_and_provider(data: dict[str, Any], source: str, lines: LineMap) -> str:
    if "version" not in data:
        raise SpecError("is required", source=source, path="version", hint=f"add 'version: {SPEC_VERSION}'")
    version = data["version"]
    if isinstance(version, bool) or version != SPEC_VERSION:
        raise SpecError(
            f"unsupported spec version {show(version)}; this provisioner reads version {SPEC_VERSION}"
            + _at(lines, ("version",)),
            source=source,
            path="version",
        )
    known = ", ".join(sorted(PROVIDERS))
    if "provider" not in data:
        raise SpecError(f"is required; one of: {known}", source=source, path="provider")
    provider = data["provider"]
    if not isinstance(provider, str) or provider not in PROVIDERS:
        message = f"unknown provider {show(provider)}; known providers: {known}"
        guess = did_you_mean(str(provider), PROVIDERS) if isinstance(provider, str) else None
        if guess:
            message += f"; did you mean {guess!r}?"
        raise SpecError(message + _at(lines, ("provider",)), source=source, path="provider")
    return provider


def _relative_file(base_dir: Path, source: str, value: str) -> tuple[Path, str]:
    """A path written in the spec: absolute, and as shown in messages (relative to the cwd)."""
    absolute = Path(os.path.normpath(base_dir / Path(value).expanduser()))
    shown = os.path.normpath(os.path.join(os.path.dirname(source), value))
    return absolute, shown


def load_spec(
    path: Path,
    *,
    cli_vars: Sequence[str] = (),
    var_files: Sequence[Path] = (),
    cli_var_order: Sequence[VarArg] | None = None,
    environ: Mapping[str, str] | None = None,
    var_items: Sequence[VarArg] | None = None,
    manifest_override: Path | None = None,
) -> LoadedSpec:
    """Load and validate a spec and everything it names; raise :class:`SpecError` if invalid.

    ``cli_var_order`` is the ``--var`` / ``--var-file`` arguments in command-line order, as
    ``("var", "name=value")`` and ``("file", "path")`` items (see ``var_order_from_argv``);
    later items win. Without it, ``var_files`` apply first and then ``cli_vars``. Given with
    them, it must list the same items. ``var_items`` is another name for ``cli_var_order``.
    ``environ`` defaults to ``os.environ``. ``manifest_override`` replaces the spec's Serve
    config file (``recover`` deploys the one a checkpoint holds).
    """
    if var_items is not None:
        if cli_var_order is not None:
            raise ValueError("pass cli_var_order or var_items, not both")
        cli_var_order = var_items
    path, source = _locate(Path(path))
    data, lines = read_yaml_file(path, source=source, what="spec file")
    data = _check_top_level(data, source, lines)
    decls = _declarations(data, source, lines)
    variables = resolve_variables(
        decls,
        spec_source=source,
        order=_var_order(cli_vars, var_files, cli_var_order),
        environ=environ,
    )
    try:
        return _load_resolved(path, source, data, lines, variables, manifest_override)
    except SpecError as exc:
        exc.message = variables.redact(exc.message, min_length=_REDACT_MIN)
        exc.args = (exc.message,)
        if exc.hint:
            exc.hint = variables.redact(exc.hint, min_length=_REDACT_MIN)
        raise


def _load_resolved(
    path: Path, source: str, data: dict[str, Any], lines: LineMap, variables: ResolvedVariables,
    manifest_override: Path | None = None,
) -> LoadedSpec:
    done = interpolate(data, variables.values, source=source, sensitive=variables.sensitive)
    resolved = done.data
    provider = _check_version_and_provider(resolved, source, lines)
    model = spec_model(provider)
    try:
        spec = model.model_validate(resolved)
    except ValidationError as exc:
        raise spec_error_from_validation(
            exc, source=source, data=resolved, root=model, lines=lines, hidden_paths=done.sensitive_paths
        ) from None
    for parts, message in spec.problems():
        raise SpecError(message + _at(lines, parts), source=source, path=format_path(parts))

    base_dir = path.resolve().parent
    state = _state_ref(base_dir, source, spec.name, spec.state)
    module_dir = None
    if spec.module is not None:
        module_dir, shown = _relative_file(base_dir, source, spec.module)
        if not module_dir.is_dir():
            raise SpecError(
                f"module directory {shown} not found" + _at(lines, ("module",)),
                source=source,
                path="module",
                hint="'module' is relative to the spec file's directory",
            )

    manifest = manifest_path = None
    if spec.serve is not None:
        manifest_path, shown = _relative_file(base_dir, source, spec.serve.manifest)
        if manifest_override is not None:
            manifest_path, shown = manifest_override, str(manifest_override)
        if not manifest_path.is_file():
            what = "is a directory" if manifest_path.is_dir() else "not found"
            raise SpecError(
                f"Serve config file {shown} {what}" + _at(lines, ("serve", "manifest")),
                source=source,
                path="serve.manifest",
                hint="'serve.manifest' is relative to the spec file's directory",
            )
        from provisioner.serve.manifest import load_manifest

        manifest = load_manifest(Path(shown), spec_source=source)
        port = manifest.http_port
        if port is not None and port != spec.serve.http_port:
            raise SpecError(
                f"{shown} sets http_options.port: {port} but {source} has serve.http_port: "
                f"{spec.serve.http_port}" + _at(lines, ("serve", "http_port")),
                source=source,
                path="serve.http_port",
                hint=f"make them equal, or remove http_options.port from {shown}",
            )

    return LoadedSpec(
        path=path.resolve(),
        source=source,
        base_dir=base_dir,
        spec=spec,
        variables=variables,
        manifest=manifest,
        manifest_path=manifest_path,
        state=state,
        module_dir=module_dir,
    )


def locate_state(path: Path, var_items: Sequence[VarArg] = ()) -> tuple[str, StateRef]:
    """The cluster name and the state of a spec, without resolving its variables or reading
    its manifest: what the read-only commands (output, state, status, force-unlock) need, so
    they work without the values a plan needs. Falls back to a full load when either is
    written with a variable (or is not what it should be, which that load explains)."""
    path, source = _locate(Path(path))
    data, lines = read_yaml_file(path, source=source, what="spec file")
    name = data.get("name") if isinstance(data, dict) else None
    state = data.get("state", {}) if isinstance(data, dict) else None
    if state is None:
        state = {}
    if not isinstance(name, str) or not isinstance(state, dict) or "${" in name + repr(state):
        loaded = load_spec(path, var_items=var_items)
        return loaded.spec.name, loaded.state
    try:
        config = StateConfig.model_validate(state)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, source=source, data=state, root=StateConfig,
                                         prefix=("state",), lines=lines) from None
    for parts, message in config.problems():
        full = ("state", *parts)
        raise SpecError(message + _at(lines, full), source=source, path=format_path(full))
    return name, _state_ref(path.resolve().parent, source, name, config)

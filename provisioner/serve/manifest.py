"""The Serve manifest: a standard Ray Serve config file, the one ``serve deploy`` takes.

The models mirror Ray's ``ray.serve.schema`` (``ServeDeploySchema``, ``ServeApplicationSchema``,
``DeploymentSchema`` and the option schemas they nest) key for key, so the CLI can check a
manifest without importing Ray (which takes seconds). ``tests/serve/test_manifest_keys.py``
compares the key sets with the installed Ray, so an upgrade that adds a key is noticed.

We are stricter than Ray in one way on purpose: Ray ignores unknown keys in ``http_options`` and
at the top level (for forward compatibility); here every unknown key is an error with a "did you
mean", because a silently ignored ``http_optons:`` is worse than a refusal. Free-form values
(``runtime_env``, ``user_config``, ``args``, ``ray_actor_options``, ``autoscaling_config``...)
are kept as written; Ray validates those when the dashboard receives them.

A local ``working_dir`` (no URI scheme) is resolved against the manifest's directory; the serve
provider packs it (``provisioner.serve.package``) and replaces it with the package's URI via
:meth:`Application.to_config`. Remote URIs are kept as written.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from provisioner.errors import SpecError
from provisioner.serve.package import is_package_file
from provisioner.spec.problems import format_path, spec_error_from_validation
from provisioner.spec.yamlfile import LineMap, read_yaml_file

Problem = tuple[tuple[str | int, ...], str]
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[int, Field(gt=0)]
Percent = Annotated[float, Field(ge=0, le=100)]


class _ServeModel(BaseModel):
    # Lax types like Ray's own schema (it accepts what Ray accepts); strict keys, unlike Ray.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    def problems(self) -> Iterator[Problem]:
        return iter(())


class LoggingConfig(_ServeModel):
    """ray.serve.schema.LoggingConfig."""

    encoding: Literal["TEXT", "JSON"] | None = None
    log_level: int | str | None = None
    logs_dir: str | None = None
    enable_access_log: bool | None = None
    additional_log_standard_attrs: list[str] | None = None


class TracingConfig(_ServeModel):
    """ray.serve.schema.TracingConfig."""

    enabled: bool | None = None
    exporter_import_path: str | None = None
    sampling_ratio: Annotated[float, Field(ge=0, le=1)] | None = None


class HTTPOptions(_ServeModel):
    """ray.serve.schema.HTTPOptionsSchema."""

    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    root_path: str | None = None
    request_timeout_s: NonNegative | None = None
    keep_alive_timeout_s: NonNegative | None = None
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None


class GRPCOptions(_ServeModel):
    """ray.serve.schema.gRPCOptionsSchema."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    grpc_servicer_functions: list[str] | None = None
    request_timeout_s: NonNegative | None = None
    enable_reflection: bool | None = None


class ControllerOptions(_ServeModel):
    """ray.serve.config.ControllerOptions."""

    runtime_env: dict[str, Any] | None = None


class Deployment(_ServeModel):
    """ray.serve.schema.DeploymentSchema: options overriding the ones in code."""

    name: str
    num_replicas: Any = None
    max_ongoing_requests: Positive | None = None
    max_queued_requests: int | None = None
    backpressure_config: dict[str, Any] | None = None
    user_config: dict[str, Any] | None = None
    autoscaling_config: dict[str, Any] | None = None
    graceful_shutdown_wait_loop_s: NonNegative | None = None
    graceful_shutdown_timeout_s: NonNegative | None = None
    health_check_period_s: NonNegative | None = None
    health_check_timeout_s: NonNegative | None = None
    ray_actor_options: dict[str, Any] | None = None
    placement_group_bundles: list[dict[str, Any]] | None = None
    placement_group_strategy: str | None = None
    placement_group_bundle_label_selector: list[dict[str, Any]] | None = None
    max_replicas_per_node: Positive | None = None
    logging_config: LoggingConfig | None = None
    request_router_config: dict[str, Any] | None = None
    gang_scheduling_config: dict[str, Any] | None = None
    deployment_actors: list[Any] | None = None
    rolling_update_percentage: Percent | None = None
    max_surge_percent: Annotated[int, Field(ge=0, le=100)] | None = None

    @field_validator("num_replicas", mode="before")
    @classmethod
    def _num_replicas(cls, value: Any) -> Any:
        # Ray: Optional[Union[PositiveInt, str]] where the only string is "auto".
        if value is None or value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'must be a positive integer or "auto", got {value!r}')
        return value

    @property
    def autoscaling(self) -> bool:
        """Whether Serve autoscales this deployment (Ray's ``is_autoscaling_configured``)."""
        return self.num_replicas == "auto" or self.autoscaling_config is not None

    def problems(self) -> Iterator[Problem]:
        if isinstance(self.num_replicas, int) and self.autoscaling_config is not None:
            yield ("num_replicas",), (
                "num_replicas cannot be a number when autoscaling_config is set;"
                ' remove it or write num_replicas: "auto"'
            )


def _check_import_path(value: str) -> str:
    # The same rules as ServeApplicationSchema.import_path_format_valid.
    if ":" in value:
        module, _, attr = value.partition(":")
        if not module or not attr or ":" in attr:
            raise ValueError(f"expected 'module:attribute' or 'module.attribute', got {value!r}")
    elif "." not in value or value.startswith(".") or value.endswith("."):
        raise ValueError(f"expected 'module:attribute' or 'module.attribute', got {value!r}")
    return value


def _check_route_prefix(value: str | None) -> str | None:
    # The same rules as ray.serve.schema._route_prefix_format.
    if value is None:
        return value
    if not value.startswith("/"):
        raise ValueError(f'must start with "/", got {value!r}')
    if len(value) > 1 and value.endswith("/"):
        raise ValueError(f'must not end with "/" (unless it is just "/"), got {value!r}')
    if "{" in value or "}" in value:
        raise ValueError(f"must not contain wildcards '{{' or '}}', got {value!r}")
    return value


class Application(_ServeModel):
    """ray.serve.schema.ServeApplicationSchema: one application of the manifest."""

    name: Annotated[str, Field(min_length=1)] = "default"
    route_prefix: str | None = "/"
    import_path: str
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    host: Any = None
    port: Any = None
    deployments: list[Deployment] = Field(default_factory=list)
    autoscaling_policy: dict[str, Any] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    logging_config: LoggingConfig | None = None
    external_scaler_enabled: bool = False

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _working_dir: Path | None = PrivateAttr(default=None)

    @field_validator("import_path")
    @classmethod
    def _import_path(cls, value: str) -> str:
        return _check_import_path(value)

    @field_validator("route_prefix")
    @classmethod
    def _route_prefix(cls, value: str | None) -> str | None:
        return _check_route_prefix(value)

    @field_validator("host", "port", mode="before")
    @classmethod
    def _no_host_port(cls, value: Any, info: Any) -> Any:
        # Ray refuses these in a multi-application config (ServeDeploySchema.nested_host_and_port).
        raise ValueError(f"set {info.field_name} under http_options at the top level, not per application")

    @property
    def local_working_dir(self) -> Path | None:
        """The absolute local directory of ``runtime_env.working_dir``; None if remote or unset."""
        return self._working_dir

    @property
    def working_dir(self) -> str | None:
        """``runtime_env.working_dir`` as written (a local path or a URI), or None."""
        value = self.runtime_env.get("working_dir")
        return value if isinstance(value, str) else None

    def to_config(self, *, working_dir: str | None = None) -> dict[str, Any]:
        """The application as written (no defaults filled in), ready to send to Ray.

        ``working_dir`` replaces ``runtime_env.working_dir`` (the packed directory's URI).
        """
        config = copy.deepcopy(self._raw)
        if working_dir is not None:
            runtime_env = config.get("runtime_env") or {}
            config["runtime_env"] = {**runtime_env, "working_dir": working_dir}
        return config

    def problems(self) -> Iterator[Problem]:
        seen: dict[str, int] = {}
        for i, deployment in enumerate(self.deployments):
            if deployment.name in seen:
                yield ("deployments", i, "name"), (
                    f"deployment {deployment.name!r} is already configured by"
                    f" deployments[{seen[deployment.name]}]"
                )
            seen.setdefault(deployment.name, i)
            for rel, message in deployment.problems():
                yield ("deployments", i, *rel), message
        if self.external_scaler_enabled:
            for i, deployment in enumerate(self.deployments):
                if deployment.autoscaling:
                    yield ("deployments", i), (
                        "external_scaler_enabled is true, so Serve's autoscaling must be off"
                        " (no autoscaling_config, no num_replicas: auto)"
                    )
        working_dir = self.runtime_env.get("working_dir")
        if working_dir is not None and not isinstance(working_dir, str):
            yield ("runtime_env", "working_dir"), "expected a local directory or a URI"


class ServeManifest(_ServeModel):
    """ray.serve.schema.ServeDeploySchema: the whole Serve config file."""

    proxy_location: Literal["Disabled", "HeadOnly", "EveryNode"] | None = None
    http_options: HTTPOptions | None = None
    grpc_options: GRPCOptions | None = None
    controller_options: ControllerOptions | None = None
    logging_config: LoggingConfig | None = None
    tracing_config: TracingConfig | None = None
    applications: Annotated[list[Application], Field(min_length=1)]
    target_capacity: Percent | None = None

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The absolute path of the manifest file (None if not loaded from a file)."""
        return self._path

    @property
    def http_port(self) -> int | None:
        """``http_options.port`` if the file sets it."""
        return self.http_options.port if self.http_options else None

    def top_config(self) -> dict[str, Any]:
        """The file's top-level options as written (everything but ``applications``)."""
        return {k: copy.deepcopy(v) for k, v in self._raw.items() if k != "applications"}

    def resolve_working_dir(self, value: str) -> Path:
        """A local ``working_dir`` as written in this file, made absolute."""
        base = self._path.parent if self._path is not None else Path.cwd()
        return (base / Path(value).expanduser()).resolve()

    def application(self, name: str) -> Application:
        """The application called ``name`` (KeyError if none)."""
        for app in self.applications:
            if app.name == name:
                return app
        raise KeyError(name)

    def to_config(self, *, working_dirs: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The file as written, with each app's ``working_dir`` replaced per ``working_dirs``."""
        config = copy.deepcopy(self._raw)
        working_dirs = working_dirs or {}
        config["applications"] = [
            app.to_config(working_dir=working_dirs.get(app.name)) for app in self.applications
        ]
        return config

    def problems(self) -> Iterator[Problem]:
        names: dict[str, int] = {}
        routes: dict[str, int] = {}
        for i, app in enumerate(self.applications):
            if app.name in names:
                yield ("applications", i, "name"), (
                    f"application name {app.name!r} is already used by applications[{names[app.name]}]"
                )
            names.setdefault(app.name, i)
            if app.route_prefix is not None:
                if app.route_prefix in routes:
                    yield ("applications", i, "route_prefix"), (
                        f"route_prefix {app.route_prefix!r} is already used by"
                        f" applications[{routes[app.route_prefix]}] (each application needs its own;"
                        ' an application without one gets "/")'
                    )
                routes.setdefault(app.route_prefix, i)
            for rel, message in app.problems():
                yield ("applications", i, *rel), message


# Ray's key sets, as written above (tests/serve/test_manifest_keys.py compares them with Ray's).
DEPLOY_KEYS = frozenset(ServeManifest.model_fields)
APPLICATION_KEYS = frozenset(Application.model_fields)
DEPLOYMENT_KEYS = frozenset(Deployment.model_fields)
HTTP_OPTIONS_KEYS = frozenset(HTTPOptions.model_fields)
GRPC_OPTIONS_KEYS = frozenset(GRPCOptions.model_fields)
LOGGING_CONFIG_KEYS = frozenset(LoggingConfig.model_fields)
TRACING_CONFIG_KEYS = frozenset(TracingConfig.model_fields)
CONTROLLER_OPTIONS_KEYS = frozenset(ControllerOptions.model_fields)


def _not_a_serve_config(source: str, data: Any) -> SpecError:
    hint = (
        "the file `serve deploy` takes:"
        " see https://docs.ray.io/en/latest/serve/production-guide/config.html"
    )
    if isinstance(data, dict) and "import_path" in data:
        hint = "this looks like a single application: put it under 'applications:' as a list item"
    return SpecError(
        "is not a Ray Serve config file (expected a mapping with an 'applications' list)",
        source=source,
        hint=hint,
    )


def _resolve_working_dirs(manifest: ServeManifest, source: str, lines: LineMap) -> None:
    for i, app in enumerate(manifest.applications):
        value = app.working_dir
        if value is None or _URI.match(value):
            continue  # unset, or a remote URI (s3://, gs://, https://, file://...zip): as written
        directory = manifest.resolve_working_dir(value)
        if directory.is_file() and is_package_file(directory):
            app._working_dir = directory  # a package already built (restored from a checkpoint)
            continue
        if not directory.is_dir():
            parts = ("applications", i, "runtime_env", "working_dir")
            line = lines.line_of(parts)
            what = "does not exist" if not directory.exists() else "is not a directory"
            raise SpecError(
                f"working_dir {value!r} {what} (looked at {directory})"
                + (f" (line {line})" if line else ""),
                source=source,
                path=format_path(parts),
                hint="a local working_dir is relative to the manifest's directory",
            )
        app._working_dir = directory


def load_manifest(path: Path, *, spec_source: str) -> ServeManifest:
    """Read and check the Serve config file at ``path`` (named in ``spec_source``'s serve.manifest)."""
    source = str(path)
    if not path.exists():
        raise SpecError(
            f"Serve config file not found (serve.manifest in {spec_source})",
            source=source,
        )
    data, lines = read_yaml_file(path, source=source, what="Serve config file")
    if not isinstance(data, dict) or "applications" not in data:
        raise _not_a_serve_config(source, data)
    if not isinstance(data["applications"], list) or not data["applications"]:
        line = lines.line_of(("applications",))
        raise SpecError(
            "must be a non-empty list of applications" + (f" (line {line})" if line else ""),
            source=source,
            path="applications",
        )
    try:
        manifest = ServeManifest.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(
            exc, source=source, data=data, root=ServeManifest, lines=lines
        ) from None
    for parts, message in manifest.problems():
        line = lines.line_of(parts)
        raise SpecError(message + (f" (line {line})" if line else ""), source=source, path=format_path(parts))
    manifest._raw = copy.deepcopy(data)
    manifest._path = path.resolve()
    for app, raw in zip(manifest.applications, data["applications"]):
        app._raw = copy.deepcopy(raw)
    _resolve_working_dirs(manifest, source, lines)
    return manifest

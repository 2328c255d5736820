"""The models of ``cluster.yaml``: the spec, its variables, state and serve sections.

:class:`Spec` is the provider-independent part; each registered provider gets a subclass whose
``provider`` is a literal and whose ``cluster`` is that provider's settings model
(:func:`spec_model`). A loaded spec is always an instance of one of those subclasses.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Iterator, Literal

from pydantic import Field, ValidationInfo, create_model, field_validator

from provisioner.spec.base import Problem, SpecModel, expected
from provisioner.spec.providers import PROVIDERS, Port

SPEC_VERSION = 1
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$"
VAR_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
VariableType = Literal["string", "number", "bool", "list", "map", "any"]
VarName = Annotated[str, Field(pattern=VAR_NAME_PATTERN)]
OutputName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")]
Number = int | float


class VariableValidation(SpecModel):
    """Checks a variable's final value must pass; ``message`` is shown when one fails."""

    min: Number | None = Field(None, description="Smallest allowed number.")
    max: Number | None = Field(None, description="Largest allowed number.")
    pattern: str | None = Field(None, description="Regular expression a string must fully match.")
    one_of: list[Any] | None = Field(None, description="The allowed values.")
    message: str | None = Field(None, description="Shown when a check fails.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise expected(f"a valid regular expression ({exc})") from None
        return value


class VariableDecl(SpecModel):
    """A declared input variable (Terraform's ``variable`` block)."""

    type: VariableType = Field("any", description="string, number, bool, list, map or any.")
    default: Any = Field(None, description="Value when none is given; no default = required.")
    description: str | None = None
    sensitive: bool = Field(False, description="Never shown in output, errors or saved plans.")
    validation: VariableValidation | None = None

    @property
    def required(self) -> bool:
        """True when the variable has no default (an explicit ``default: null`` is a default)."""
        return "default" not in self.model_fields_set

    def problems(self) -> Iterator[Problem]:
        rules = self.validation
        if rules is None:
            return
        if (rules.min is not None or rules.max is not None) and self.type not in ("number", "any"):
            yield ("validation",), f"min/max apply to numbers, but the type is {self.type}"
        if rules.pattern is not None and self.type not in ("string", "any"):
            yield ("validation", "pattern"), f"pattern applies to strings, but the type is {self.type}"
        if rules.min is not None and rules.max is not None and rules.min > rules.max:
            yield ("validation", "min"), f"min ({rules.min}) is greater than max ({rules.max})"


S3_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# https://cloud.google.com/storage/docs/buckets#naming: up to 63 characters, or 222 in parts of
# up to 63 separated by dots; never starting with "goog".
_GCS_BUCKET_PART = r"[a-z0-9][a-z0-9_-]{0,61}[a-z0-9]"
GCS_BUCKET_PATTERN = r"^(?!goog)" + _GCS_BUCKET_PART + r"(\." + _GCS_BUCKET_PART + r")*$"
DEFAULT_STATE_KEY = "provisioner/{name}/state.json"
# Which state.backend each key of the state section belongs to.
_STATE_KEYS = {"path": ("local",), "bucket": ("s3", "gcs"), "key": ("s3", "gcs"),
               "region": ("s3",), "project": ("gcs",)}


class StateConfig(SpecModel):
    """Where the state document lives: a local file, or an object in an S3 bucket (which must
    enforce conditional writes) or a Cloud Storage bucket. Each backend's keys are allowed with
    that backend only."""

    backend: Literal["local", "s3", "gcs"] = Field(
        "local", description="local (a file), s3 (an object in an S3 bucket) or gcs (an object "
        "in a Cloud Storage bucket).")
    path: str = Field(
        ".provisioner/state.json",
        description="local: the state file, relative to the spec's directory.")
    bucket: str | None = Field(None, description="s3, gcs: the bucket (required).")
    key: str | None = Field(
        None, description="s3, gcs: the object key; default provisioner/<name>/state.json. The "
        "lock is the object <key>.lock.")
    region: str | None = Field(
        None, description="s3: the bucket's region; default: boto3's (AWS_REGION, the profile).")
    project: str | None = Field(
        None, description="gcs: the project of the Cloud Storage client; default: none (the "
        "state's object calls need none).")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("backend") == "gcs":
            if not re.match(GCS_BUCKET_PATTERN, value) or not 3 <= len(value) <= 222:
                raise expected("a Cloud Storage bucket name (3-63 lowercase letters, digits, "
                               "'-', '_' and '.'; no gs:// and no key)")
        elif not re.match(S3_BUCKET_PATTERN, value):
            raise expected("an S3 bucket name (3-63 lowercase letters, digits, '.' and '-'; "
                           "no s3:// and no key)")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("/") or value.endswith("/")
                                  or len(value.encode()) > 1000):
            raise expected("an object key such as 'team/cluster/state.json' (not starting or "
                           "ending with '/')")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z0-9-]+$", value):
            raise expected("a region name such as 'us-east-1'")
        return value

    @field_validator("project")
    @classmethod
    def _project(cls, value: str | None) -> str | None:
        # https://cloud.google.com/resource-manager/docs/creating-managing-projects
        if value is not None and not re.match(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", value):
            raise expected("a project id such as 'my-project-123' (6-30 lowercase letters, "
                           "digits and '-')")
        return value

    def problems(self) -> Iterator[Problem]:
        given = self.model_fields_set
        if self.backend != "local" and self.bucket is None:
            yield ("bucket",), f"is required when state.backend is {self.backend}"
        for name, backends in _STATE_KEYS.items():
            if name in given and self.backend not in backends:
                where = ("; with s3 and gcs the state is the object state.key in state.bucket"
                         if name == "path" else f" (state.backend is {self.backend})")
                yield (name,), f"applies to state.backend {' and '.join(backends)} only{where}"


class ServeConfig(SpecModel):
    """The Serve applications this cluster runs."""

    manifest: str = Field(description="A Ray Serve config file, relative to the spec's directory.")
    http_port: Port = Field(8000, description="Serve's HTTP port on every node.")
    http_host: str = Field("0.0.0.0", description="Serve's HTTP host on every node.")
    checkpoint_store: str | None = Field(
        None, description="Where each apply that changes the applications writes a checkpoint "
        "for recover: file://path (relative to the spec's directory), s3://bucket/prefix, "
        "gs://bucket/prefix or custom://package.module.Class/path. Default: a checkpoints "
        "directory next to the state file.")

    @field_validator("checkpoint_store")
    @classmethod
    def _store_uri(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(file|s3|gs|custom)://.+", value):
            raise expected("file://path, s3://bucket/prefix, gs://bucket/prefix or "
                           "custom://package.module.Class/path")
        return value


class Spec(SpecModel):
    """``cluster.yaml``. ``cluster`` is the provider's settings model (see :func:`spec_model`)."""

    version: Literal[1] = Field(description="Spec format version; must be 1.")
    name: str = Field(description="Cluster name: lowercase letters, digits and '-', 2-40 long.")
    provider: str = Field(description="Where the nodes run.")
    module: str | None = Field(
        None, description="Directory of your own module (default: the built-in one)."
    )
    state: StateConfig = Field(default_factory=StateConfig)
    variables: dict[VarName, VariableDecl] = Field(default_factory=dict)
    cluster: Any = None
    serve: ServeConfig | None = None
    outputs: dict[OutputName, Any] = Field(
        default_factory=dict, description="Name -> value; may hold ${...} references."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(NAME_PATTERN, value):
            raise expected(
                "2-40 lowercase letters, digits and '-', starting with a letter"
                " and ending with a letter or digit"
            )
        return value

    def problems(self) -> Iterator[Problem]:
        for rel, message in self.state.problems():
            yield ("state", *rel), message
        for name, decl in self.variables.items():
            for rel, message in decl.problems():
                yield ("variables", name, *rel), message
        if isinstance(self.cluster, SpecModel):
            for rel, message in self.cluster.problems():
                yield ("cluster", *rel), message
            # Settings that depend on the Serve section (a cloud cluster's package store).
            serve_problems = getattr(self.cluster, "serve_problems", None)
            if self.serve is not None and serve_problems is not None:
                for rel, message in serve_problems(self.serve):
                    yield ("cluster", *rel), message


@functools.cache
def spec_model(provider: str) -> type[Spec]:
    """The :class:`Spec` subclass for ``provider`` (which must be registered)."""
    info = PROVIDERS[provider]
    cluster_field: Any
    if info.cluster_required:
        cluster_field = (info.settings, Field(description=info.description))
    else:
        cluster_field = (info.settings, Field(default_factory=info.settings, description=info.description))
    title = "".join(part.capitalize() for part in provider.split("_")) + "Spec"
    return create_model(  # type: ignore[call-overload, no-any-return]
        title,
        __base__=Spec,
        __doc__=f"cluster.yaml for provider {provider!r}: {info.description}",
        provider=(Literal[provider], Field(description="Where the nodes run.")),
        cluster=cluster_field,
    )

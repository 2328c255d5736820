"""The spec: ``cluster.yaml`` read, its variables resolved, validated strictly, with its manifest.

Entry points: :func:`load_spec` (everything a command needs) and :func:`spec_json_schema`
(for editors). Every problem is a :class:`provisioner.errors.SpecError` naming the file and the
key path (``cluster.dashboard_port``, ``applications[1].deployments[0].num_replicas``).
"""

from provisioner.spec.loader import (
    DEFAULT_SPEC_NAME,
    LoadedSpec,
    StateRef,
    load_spec,
    locate_state,
)
from provisioner.spec.models import (
    ServeConfig,
    Spec,
    StateConfig,
    VariableDecl,
    VariableValidation,
    spec_model,
)
from provisioner.spec.providers import (
    PROVIDERS,
    LocalSettings,
    MemoryGroup,
    MemorySettings,
    ProviderInfo,
    register,
)
from provisioner.spec.schema import spec_json_schema
from provisioner.spec.variables import (
    ENV_PREFIX,
    SENSITIVE_PREFIX,
    ResolvedVariables,
    VarArg,
    resolve_variables,
    var_order_from_argv,
)

__all__ = [
    "DEFAULT_SPEC_NAME",
    "ENV_PREFIX",
    "PROVIDERS",
    "SENSITIVE_PREFIX",
    "LoadedSpec",
    "LocalSettings",
    "MemoryGroup",
    "MemorySettings",
    "ProviderInfo",
    "ResolvedVariables",
    "ServeConfig",
    "Spec",
    "StateConfig",
    "StateRef",
    "VarArg",
    "VariableDecl",
    "VariableValidation",
    "load_spec",
    "locate_state",
    "register",
    "resolve_variables",
    "spec_json_schema",
    "spec_model",
    "var_order_from_argv",
]

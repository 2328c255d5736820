"""Pure readers of the Ray dashboard's answers: Serve status and nodes.

Each takes the decoded JSON of one API call and returns plain data; no I/O here, so each is tested
against answers recorded from a real Ray (``tests/providers/fixtures/``).

``GET /api/serve/applications/`` (Ray 2.60) answers::

    {"controller_info": {...} | {}, "proxy_location": "EveryNode", "http_options": {...},
     "proxies": {node_id: {"status": "HEALTHY", ...}},
     "applications": {name: {"status": "DEPLOYING|RUNNING|DEPLOY_FAILED|UNHEALTHY|DELETING|
                                        NOT_STARTED",
                             "message": "...", "last_deployed_time_s": float,
                             "deployed_app_config": {the app dict as PUT} | null,
                             "deployments": {name: {"status", "message",
                                                    "target_num_replicas",
                                                    "replicas": [{"actor_id", "pid",
                                                                  "state", ...}]}}}}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

RUNNING = "RUNNING"
DEPLOYING = "DEPLOYING"
DEPLOY_FAILED = "DEPLOY_FAILED"
UNHEALTHY = "UNHEALTHY"
DELETING = "DELETING"
NOT_STARTED = "NOT_STARTED"
FAILED_STATUSES = frozenset({DEPLOY_FAILED, UNHEALTHY})
FAILED_DEPLOYMENT_STATUSES = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})

# Keys of a Serve app config that the serve_app resource carries as attributes of their own;
# every other key travels in ``extra``.
APP_KEYS = ("name", "route_prefix", "import_path", "runtime_env", "deployments", "args")
PACKAGE_NAME = re.compile(r"^pkg_[0-9a-f]+\.zip$")


@dataclass(frozen=True)
class DeploymentStatus:
    name: str
    status: str
    message: str
    target_replicas: int | None
    replica_states: dict[str, int] = field(default_factory=dict)
    replica_actor_ids: tuple[str, ...] = ()

    @property
    def running_replicas(self) -> int:
        return self.replica_states.get(RUNNING, 0)


@dataclass(frozen=True)
class AppStatus:
    name: str
    status: str
    message: str
    config: dict[str, Any] | None
    deployments: dict[str, DeploymentStatus] = field(default_factory=dict)
    last_deployed_time_s: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


@dataclass(frozen=True)
class ServeStatus:
    controller_running: bool
    proxy_location: str | None
    http_options: dict[str, Any]
    proxies: dict[str, str]
    apps: dict[str, AppStatus]


def read_serve_status(doc: Mapping[str, Any] | None) -> ServeStatus:
    """Parse ``GET /api/serve/applications/``. Tolerates missing keys (Serve not started)."""
    doc = doc or {}
    apps = {
        name: read_app(name, app or {}) for name, app in (doc.get("applications") or {}).items()
    }
    proxies = {
        node: str((proxy or {}).get("status", "")) for node, proxy in (doc.get("proxies") or {}).items()
    }
    return ServeStatus(
        controller_running=bool((doc.get("controller_info") or {}).get("actor_id")),
        proxy_location=doc.get("proxy_location"),
        http_options=dict(doc.get("http_options") or {}),
        proxies=proxies,
        apps=apps,
    )


def read_app(name: str, app: Mapping[str, Any]) -> AppStatus:
    deployments = {
        dep_name: read_deployment(dep_name, dep or {})
        for dep_name, dep in (app.get("deployments") or {}).items()
    }
    config = app.get("deployed_app_config")
    return AppStatus(
        name=str(app.get("name") or name),
        status=str(app.get("status") or NOT_STARTED),
        message=str(app.get("message") or ""),
        config=dict(config) if isinstance(config, Mapping) else None,
        deployments=deployments,
        last_deployed_time_s=app.get("last_deployed_time_s"),
    )


def read_deployment(name: str, dep: Mapping[str, Any]) -> DeploymentStatus:
    states: dict[str, int] = {}
    actor_ids = []
    for replica in dep.get("replicas") or ():
        state = str(replica.get("state") or "UNKNOWN")
        states[state] = states.get(state, 0) + 1
        if replica.get("actor_id"):
            actor_ids.append(str(replica["actor_id"]))
    target = dep.get("target_num_replicas")
    return DeploymentStatus(
        name=str(dep.get("name") or name),
        status=str(dep.get("status") or ""),
        message=str(dep.get("message") or ""),
        target_replicas=int(target) if isinstance(target, (int, float)) else None,
        replica_states=states,
        replica_actor_ids=tuple(sorted(actor_ids)),
    )


def failure_message(app: AppStatus) -> str:
    """The app's own error text followed by that of each failing deployment."""
    parts = [app.message.strip()] if app.message.strip() else []
    for dep in sorted(app.deployments.values(), key=lambda d: d.name):
        if dep.status in FAILED_DEPLOYMENT_STATUSES and dep.message.strip():
            parts.append(f"deployment {dep.name} {dep.status}: {dep.message.strip()}")
    return "\n".join(parts) or f"application {app.name} is {app.status}"


def progress_line(app: AppStatus) -> str:
    """One line for a progress event: ``DEPLOYING: Hello UPDATING 1/2 running``."""
    deps = []
    for dep in sorted(app.deployments.values(), key=lambda d: d.name):
        target = "?" if dep.target_replicas is None else str(dep.target_replicas)
        deps.append(f"{dep.name} {dep.status} {dep.running_replicas}/{target} running")
    return f"{app.status}: " + ", ".join(deps) if deps else app.status


def app_summary(app: AppStatus) -> dict[str, Any]:
    """Plain data for ``provisioner status``."""
    return {
        "status": app.status,
        "message": app.message,
        "deployments": {
            dep.name: {
                "status": dep.status,
                "message": dep.message,
                "target_replicas": dep.target_replicas,
                "replicas": dict(sorted(dep.replica_states.items())),
            }
            for dep in sorted(app.deployments.values(), key=lambda d: d.name)
        },
    }


def package_name_of(working_dir: str) -> str:
    """``file:///…/packages/pkg_<hex>.zip`` (or ``s3://``, ``gs://``: a package store's) ->
    ``pkg_<hex>.zip``; anything else unchanged."""
    if working_dir.startswith(("file://", "s3://", "gs://")):
        base = working_dir.rstrip("/").rsplit("/", 1)[-1]
        if PACKAGE_NAME.match(base):
            return base
    return working_dir


def app_attributes(config: Mapping[str, Any]) -> dict[str, Any]:
    """A deployed app config back in the serve_app attribute shape: the working_dir URI of a
    package becomes the package file name, the deployments list a dict by name, other keys go to
    ``extra``. The inverse of :func:`provisioner.providers.serve_app.app_config`."""
    runtime_env = dict(config.get("runtime_env") or {})
    if isinstance(runtime_env.get("working_dir"), str):
        runtime_env["working_dir"] = package_name_of(runtime_env["working_dir"])
    deployments = {}
    for dep in config.get("deployments") or ():
        dep = dict(dep)
        deployments[str(dep.pop("name"))] = dep
    return {
        "name": config.get("name"),
        "route_prefix": config.get("route_prefix"),
        "import_path": config.get("import_path"),
        "runtime_env": runtime_env,
        "deployments": deployments,
        "args": config.get("args"),
        "extra": {k: v for k, v in config.items() if k not in APP_KEYS},
    }


def read_nodes(doc: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Parse ``GET /api/v0/nodes`` (the state API) into one small dict per node."""
    result = ((doc or {}).get("data") or {}).get("result") or {}
    rows = result.get("result") if isinstance(result, Mapping) else result
    nodes = []
    for row in rows or ():
        resources = row.get("resources_total") or {}
        nodes.append(
            {
                "node_id": row.get("node_id"),
                "node_ip": row.get("node_ip"),
                "is_head": bool(row.get("is_head_node")),
                "state": row.get("state"),
                "cpus": resources.get("CPU"),
                "gpus": resources.get("GPU"),
            }
        )
    return sorted(nodes, key=lambda n: (not n["is_head"], str(n["node_ip"]), str(n["node_id"])))

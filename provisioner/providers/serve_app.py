"""``serve_app``: one Ray Serve application, deployed through the dashboard's REST API.

Implements :class:`provisioner.providers.base.ResourceType` (see there for the contract).

Serve's ``PUT /api/serve/applications/`` is declarative for the WHOLE set of applications: an app
missing from the body is deleted, and Serve redeploys only the apps whose config changed. So every
change here is a read-merge-write under a per-dashboard lock (several ``serve_app`` changes run in
parallel threads): GET the live apps, keep every other app's ``deployed_app_config`` exactly as it
is, put this app's dict in (or leave it out, to delete it), PUT the whole body. Then wait, outside
the lock, until the app is RUNNING (or gone), reporting per-deployment states as progress and
failing with the app's own error text on DEPLOY_FAILED / UNHEALTHY.

Attributes (references already resolved by the engine): ``name``, ``dashboard_url``,
``package_dir``, ``http_options``, ``proxy_location``, ``route_prefix``, ``import_path``,
``runtime_env`` (its ``working_dir`` is a package file NAME ``pkg_<hex>.zip`` when the app had a
local working_dir, ``package_source`` then being the source directory), ``package_source``,
``package_sync`` (``nodes``: the ray_nodes copy packages to themselves; ``store``: the package is
put into ``package_store``, an ``s3://``/``gs://`` URI every node fetches from),
``deployments`` (name -> settings), ``args`` and ``extra`` (any other app keys). Computed:
``status`` and ``message``. Serve's own config is made by :func:`app_config`; read back by
:func:`provisioner.serve.readers.app_attributes`.

No attribute forces replacement: when the head is replaced the dashboard URL may stay the same,
and create and update both mean "make this app's config be this".
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Mapping

from provisioner.errors import ProviderError, ServeError
from provisioner.providers.base import ListScope, LiveResource, ResourceType
from provisioner.serve import dashboard, readers
from provisioner.serve.endpoint import dashboard_url_for

DEFAULT_TIMEOUT_S = 300.0
POLL_S = 0.5
HTTP_OPTION_KEYS = ("host", "port", "keep_alive_timeout_s")
# Attributes Serve does not report: read back from what the state (or the spec) says.
REFERENCE_ONLY = ("dashboard_url", "dashboard_tunnel", "package_dir", "package_source",
                  "package_sync", "package_store")

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def dashboard_lock(dashboard_url: str) -> threading.Lock:
    """The lock serialising read-merge-write cycles against one dashboard (process-wide)."""
    key = dashboard_url.rstrip("/")
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def working_dir_uri(working_dir: str, package_dir: str | None,
                    package_store: str | None = None) -> str:
    """A package file name becomes ``file://<package_dir>/<name>``, or its URI in the package
    store (``s3://…/packages/<name>``) when there is one; a URI stays as written."""
    if "://" in working_dir:
        return working_dir
    if package_store:
        from provisioner.checkpoint.layout import package_key

        return f"{package_store.rstrip('/')}/{package_key(working_dir)}"
    if not package_dir:
        raise ServeError(f"working_dir {working_dir!r} is a package name but no package_dir is set")
    return f"file://{Path(package_dir) / working_dir}"


def app_config(desired: Mapping[str, Any]) -> dict[str, Any]:
    """The Serve application dict (as PUT to the dashboard) for ``desired`` attributes.

    Keys whose value is None (and an empty ``runtime_env`` / ``deployments``) are left out so
    Serve applies its defaults; :func:`readers.app_attributes` maps them back to the same shape.
    """
    config: dict[str, Any] = {}
    extra = desired.get("extra") or {}
    config.update({k: v for k, v in extra.items() if k not in readers.APP_KEYS})
    config["name"] = desired["name"]
    if desired.get("route_prefix") is not None:
        config["route_prefix"] = desired["route_prefix"]
    config["import_path"] = desired["import_path"]
    runtime_env = dict(desired.get("runtime_env") or {})
    if isinstance(runtime_env.get("working_dir"), str):
        runtime_env["working_dir"] = working_dir_uri(
            runtime_env["working_dir"], desired.get("package_dir"),
            desired.get("package_store") if desired.get("package_sync") == "store" else None)
    if runtime_env:
        config["runtime_env"] = runtime_env
    deployments = desired.get("deployments") or {}
    if deployments:
        config["deployments"] = [
            {"name": name, **dict(settings or {})} for name, settings in sorted(deployments.items())
        ]
    if desired.get("args") is not None:
        config["args"] = desired["args"]
    return config


def deploy_body(desired: Mapping[str, Any], applications: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if desired.get("proxy_location") is not None:
        body["proxy_location"] = desired["proxy_location"]
    if desired.get("http_options"):
        body["http_options"] = dict(desired["http_options"])
    body["applications"] = sorted(applications, key=lambda app: str(app.get("name")))
    return body


def http_options_conflict(desired: Mapping[str, Any] | None, live: readers.ServeStatus) -> str:
    """Serve fixes ``http_options`` when it starts and silently ignores a change later
    (measured on Ray 2.60); say so instead of deploying something that will not take effect."""
    if not desired or not live.controller_running:
        return ""
    differ = [f"{key}: running {live.http_options.get(key)!r}, wanted {value!r}"
              for key, value in sorted(desired.items())
              if key in live.http_options and live.http_options.get(key) != value]
    return "; ".join(differ)


class ServeApp(ResourceType):
    """One Serve application. See :mod:`provisioner.providers.base` for the contract."""

    type_name = "serve_app"
    force_new = frozenset()
    computed = frozenset({"status", "message"})
    ignore_drift = frozenset({"package_source"})
    # The package's name (its content digest) is what matters; where it was packed from is not.
    ignore_changes = frozenset({"package_source"})

    def __init__(self, ctx, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(ctx)
        self.timeout_s = timeout_s

    # ---- contract -----------------------------------------------------------------------------

    def list(self, scope: ListScope) -> list[LiveResource]:
        by_url: dict[str, list] = {}
        for known in scope.known:
            url = known.attributes.get("dashboard_url")
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                tunnel = known.attributes.get("dashboard_tunnel")
                key = url.rstrip("/") + (f" via {tunnel.get('address')}" if tunnel else "")
                by_url.setdefault(key, []).append(known)
        found: list[LiveResource] = []
        for url, knowns in sorted(by_url.items()):
            try:
                reachable = dashboard_url_for(knowns[0].attributes)
                live = readers.read_serve_status(dashboard.get_applications(reachable))
            except ProviderError:
                continue  # a dashboard that does not answer has no apps we can see
            for app in live.apps.values():
                if app.status == readers.DELETING:
                    continue
                known = self._known_for(app.name, knowns)
                if known is not None:
                    found.append(self._live(known.address, url, app, live, known.attributes))
                else:  # on our dashboard but not in state: same shape, what Serve tells
                    shared = {key: knowns[0].attributes.get(key)
                              for key in (*REFERENCE_ONLY, "http_options")}
                    found.append(self._live(f"serve_app.{app.name}", url, app, live, shared))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        return self._deploy(address, desired)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        return self._deploy(address, desired)

    def delete(self, address: str, prior: LiveResource) -> None:
        attributes = prior.attributes
        name = attributes.get("name") or prior.id
        if not attributes.get("dashboard_url"):
            raise ProviderError("no dashboard_url recorded for this application", address=address)
        url = dashboard_url_for(attributes)
        with dashboard_lock(url):
            live = readers.read_serve_status(dashboard.get_applications(url))
            app = live.apps.get(name)
            if app is None:
                return  # already gone
            if app.status != readers.DELETING:
                others = self._other_configs(address, live, name)
                body = deploy_body(
                    {"proxy_location": attributes.get("proxy_location") or live.proxy_location,
                     "http_options": attributes.get("http_options")},
                    others)
                self.ctx.progress(address, f"deleting application {name}")
                dashboard.put_applications(url, body)
        self._wait_gone(address, url, name)

    def status(self, record: LiveResource) -> dict[str, Any]:
        name = record.attributes.get("name") or record.id
        if not record.attributes.get("dashboard_url"):
            return {"status": "UNKNOWN", "error": "no dashboard_url"}
        try:
            url = dashboard_url_for(record.attributes)
            live = readers.read_serve_status(dashboard.get_applications(url))
        except ProviderError as error:
            return {"status": "UNKNOWN", "error": str(error)}
        app = live.apps.get(name)
        if app is None:
            return {"status": "MISSING", "deployments": {}}
        return readers.app_summary(app)

    # ---- deploy -------------------------------------------------------------------------------

    def _deploy(self, address: str, desired: dict[str, Any]) -> LiveResource:
        if not desired.get("dashboard_url"):
            raise ProviderError("dashboard_url is not set", address=address)
        url = dashboard_url_for(desired)
        name = desired["name"]
        self._ensure_package(address, desired)
        config = app_config(desired)
        while self._deleting(url, name):  # a replace: the old app must be gone first
            self._wait_gone(address, url, name)
        with dashboard_lock(url):
            live = readers.read_serve_status(dashboard.get_applications(url))
            conflict = http_options_conflict(desired.get("http_options"), live)
            if conflict:
                raise ServeError(
                    f"Serve already runs with other http_options ({conflict}); Serve cannot "
                    "change them on a running cluster and would silently keep the old ones",
                    address=address,
                    hint="keep the running http_options, or replace the Ray head to change them")
            applications = self._other_configs(address, live, name) + [config]
            self.ctx.progress(address, f"deploying application {name}")
            dashboard.put_applications(url, deploy_body(desired, applications))
        app, live = self._wait_running(address, url, name, config)
        return self._live(address, url, app, live, desired)

    @staticmethod
    def _deleting(url: str, name: str) -> bool:
        app = readers.read_serve_status(dashboard.get_applications(url)).apps.get(name)
        return app is not None and app.status == readers.DELETING

    def _ensure_package(self, address: str, desired: Mapping[str, Any]) -> None:
        runtime_env = desired.get("runtime_env") or {}
        working_dir = runtime_env.get("working_dir")
        source = desired.get("package_source")
        package_dir = desired.get("package_dir")
        if not isinstance(working_dir, str) or "://" in working_dir:
            return
        if desired.get("package_sync") == "nodes":
            return  # every ray_node copies the packages to itself before apps deploy
        if desired.get("package_sync") == "store":
            self._upload_package(address, desired, working_dir, source)
            return
        if not package_dir:
            raise ServeError("package_dir is not set", address=address)
        if source:
            from provisioner.serve.package import build_package

            self.ctx.progress(address, f"packing {source}")
            built = build_package(Path(source), Path(package_dir))
            if built.name != working_dir:
                raise ServeError(
                    f"working_dir changed since plan ({source} now packs to {built.name}, the "
                    f"plan has {working_dir}): run plan again", address=address)
        elif not (Path(package_dir) / working_dir).is_file():
            raise ServeError(f"package {working_dir} is not in {package_dir} and no "
                             "package_source is known to build it", address=address)

    def _upload_package(self, address: str, desired: Mapping[str, Any], name: str,
                        source: str | None) -> None:
        """Put the package where every node fetches it (the package store, e.g. the S3
        checkpoint store: checkpoints then find it there), once: its name is its content."""
        from provisioner.checkpoint.layout import package_key
        from provisioner.checkpoint.stores import open_store
        from provisioner.serve.package import build_package

        store = open_store(str(desired["package_store"]), self.ctx.workdir)
        key = package_key(name)
        if store.exists(key):
            return
        cache = self.ctx.data_dir / "packages"
        if source:
            self.ctx.progress(address, f"packing {source}")
            built = build_package(Path(source), cache)
            if built.name != name:
                raise ServeError(f"working_dir changed since plan ({source} now packs to "
                                 f"{built.name}, the plan has {name}): run plan again",
                                 address=address)
        if not (cache / name).is_file():
            raise ServeError(f"package {name} is neither in {store.uri} nor in {cache}, and "
                             "no package_source is known to build it", address=address)
        self.ctx.progress(address, f"uploading {name} to {store.uri}")
        store.write(key, (cache / name).read_bytes())

    def _other_configs(self, address: str, live: readers.ServeStatus,
                       name: str) -> list[dict[str, Any]]:
        """Every other app's config exactly as deployed (apps being deleted stay deleted)."""
        others = []
        for other in live.apps.values():
            if other.name == name or other.status == readers.DELETING:
                continue
            if other.config is None:
                raise ServeError(
                    f"application {other.name} was not deployed from a config (serve.run?); a "
                    "declarative deploy would delete it", address=address,
                    hint=f"delete {other.name} or deploy it from the manifest")
            others.append(other.config)
        return others

    def _wait_running(self, address: str, url: str, name: str,
                      config: dict[str, Any]) -> tuple[readers.AppStatus, readers.ServeStatus]:
        deadline = time.monotonic() + self.timeout_s
        last_line = ""
        last_error: ProviderError | None = None
        app: readers.AppStatus | None = None
        while True:
            try:
                live = readers.read_serve_status(dashboard.get_applications(url))
                last_error = None
                app = live.apps.get(name)
            except ProviderError as error:  # keep polling through a dashboard hiccup
                last_error, live = error, None
            if live is not None and app is not None and app.config == config:
                if app.status == readers.RUNNING:
                    return app, live
                if app.failed:
                    raise ServeError(f"application {name} {app.status}:\n"
                                     + readers.failure_message(app), address=address)
                line = readers.progress_line(app)
                if line != last_line:
                    self.ctx.progress(address, line)
                    last_line = line
            if time.monotonic() > deadline:
                detail = (readers.failure_message(app) if app is not None
                          else str(last_error or "application not found"))
                raise ServeError(
                    f"application {name} not RUNNING after {self.timeout_s:.0f}s "
                    f"({last_line or 'no status'}):\n{detail}", address=address)
            time.sleep(POLL_S)

    def _wait_gone(self, address: str, url: str, name: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            live = readers.read_serve_status(dashboard.get_applications(url))
            app = live.apps.get(name)
            if app is None:
                self.ctx.progress(address, f"application {name} deleted")
                return
            if time.monotonic() > deadline:
                raise ServeError(f"application {name} still {app.status} after "
                                 f"{self.timeout_s:.0f}s", address=address)
            time.sleep(POLL_S)

    # ---- live shape ---------------------------------------------------------------------------

    @staticmethod
    def _known_for(name: str, knowns: list) -> Any:
        for known in knowns:
            if known.attributes.get("name") == name:
                return known
        for known in knowns:
            if known.address == f"serve_app.{name}":
                return known
        return None

    @staticmethod
    def _live(address: str, url: str, app: readers.AppStatus, live: readers.ServeStatus,
              reference: Mapping[str, Any]) -> LiveResource:
        """The live app in the desired attribute shape; ``reference`` (desired or known
        attributes) supplies what Serve does not report (package_dir, package_source) and which
        http_options keys to compare."""
        attributes = readers.app_attributes(app.config or {"name": app.name})
        wanted = reference.get("http_options")
        keys = list(wanted) if isinstance(wanted, Mapping) and wanted else HTTP_OPTION_KEYS
        attributes.update({key: reference[key] for key in REFERENCE_ONLY if key in reference})
        attributes.update(
            dashboard_url=reference.get("dashboard_url") or url,
            package_dir=reference.get("package_dir"),
            package_source=reference.get("package_source"),
            http_options={key: live.http_options.get(key) for key in keys},
            proxy_location=live.proxy_location,
            status=app.status,
            message=app.message,
        )
        return LiveResource(address=address, id=app.name, attributes=attributes)

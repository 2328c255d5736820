"""Module expansion: a module turns the validated spec into resources.

A module is a directory of declarative data (``modules/<provider>/`` built in, or the spec's
``module:`` directory)::

    module.yaml         provider: local        # whose settings model validates `cluster:`
                        description: ...
                        template: resources.yaml.j2
    resources.yaml.j2   Jinja2 rendering YAML: {resources: [...], outputs: {...}}

The template sees ``name``, ``cluster`` (settings), ``serve`` (http options and proxy location),
``apps`` (each Serve application, ready to become a ``serve_app`` resource) and ``spec``.
Jinja2 is imported here only, when a spec is expanded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.data import data_path
from provisioner.errors import SpecError
from provisioner.graph import ResourceGraph, check_references
from provisioner.providers import RESOURCE_TYPES
from provisioner.resources import Resource, is_address, type_of


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Blueprint:
    """What the spec asks for: resources (with references) and outputs."""

    resources: dict[str, Resource]
    outputs: dict[str, Any]
    graph: ResourceGraph
    sensitive_values: list[str] = field(default_factory=list)


def module_dir(loaded) -> Path:
    spec = loaded.spec
    if spec.module:
        path = (loaded.base_dir / spec.module).resolve()
        if not (path / "module.yaml").is_file():
            raise SpecError(
                f"{path} is not a module directory (no module.yaml)",
                source=str(loaded.path),
                path="module",
            )
        return path
    return data_path("modules") / spec.provider


def expand(loaded, placement: dict[str, Any] | None = None) -> Blueprint:
    """Render the module for ``loaded`` (a LoadedSpec) and check the resulting graph.

    ``placement`` is what ``recover`` recorded in the state: ``head`` (the host now running the
    head, when it moved to a standby) and ``generation`` (how many heads recover replaced)."""
    directory = module_dir(loaded)
    meta = _read_module_meta(directory)
    if meta.get("provider") != loaded.spec.provider:
        raise SpecError(
            f"module {directory} is for provider '{meta.get('provider')}', "
            f"the spec says '{loaded.spec.provider}'",
            source=str(loaded.path),
            path="module",
        )
    template_name = meta.get("template", "resources.yaml.j2")
    rendered = _render(directory, template_name, _context(loaded, placement or {}))
    source = str(directory / template_name)
    try:
        # libyaml's parser: a module for 1,000 resources renders ~100k lines of YAML.
        data = yaml.load(rendered, Loader=_LOADER) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"module rendered invalid YAML: {exc}", source=source) from None
    resources = _parse_resources(data.get("resources") or [], source)
    outputs = dict(data.get("outputs") or {})
    outputs.update(loaded.spec.outputs or {})
    graph = ResourceGraph.from_resources(resources.values(), source=source)
    check_references(outputs, resources, source=source, where="outputs")
    return Blueprint(
        resources=resources,
        outputs=outputs,
        graph=graph,
        sensitive_values=loaded.variables.sensitive_values(),
    )


def _read_module_meta(directory: Path) -> dict[str, Any]:
    path = directory / "module.yaml"
    try:
        meta = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read module: {exc}", source=str(path)) from None
    if not isinstance(meta, dict):
        raise SpecError("module.yaml must be a mapping", source=str(path))
    return meta


def _render(directory: Path, template_name: str, context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    try:
        return env.get_template(template_name).render(**context)
    except jinja2.TemplateError as exc:
        raise SpecError(f"module template failed: {exc}", source=str(directory / template_name))


def _context(loaded, placement: dict[str, Any]) -> dict[str, Any]:
    spec = loaded.spec
    serve = _serve_context(loaded)
    return {
        "placement": {"head": placement.get("head"),
                      "generation": int(placement.get("generation") or 0)},
        "name": spec.name,
        "cluster": spec.cluster.model_dump(mode="json"),
        "serve": serve,
        "apps": _apps(loaded) if serve else [],
        "spec": spec.model_dump(mode="json", exclude={"variables"}),
    }


def _serve_context(loaded) -> dict[str, Any] | None:
    spec = loaded.spec
    if spec.serve is None or loaded.manifest is None:
        return None
    top = loaded.manifest.top_config()
    http_options = dict(top.get("http_options") or {})
    http_options.update(host=spec.serve.http_host, port=spec.serve.http_port)
    return {
        "http_port": spec.serve.http_port,
        "http_options": http_options,
        "proxy_location": top.get("proxy_location", "EveryNode"),
    }


def _apps(loaded) -> list[dict[str, Any]]:
    from provisioner.serve.package import package_name_of

    apps = []
    for index, app in enumerate(loaded.manifest.applications):
        config = dict(app.to_config())
        runtime_env = dict(config.pop("runtime_env", None) or {})
        package_source = None
        working_dir = runtime_env.get("working_dir")
        if working_dir and "://" not in str(working_dir):
            source_dir = loaded.manifest.resolve_working_dir(str(working_dir))
            package_source = str(source_dir)
            runtime_env["working_dir"] = package_name_of(source_dir)
        deployments = {
            d["name"]: {k: v for k, v in d.items() if k != "name"}
            for d in config.pop("deployments", None) or []
        }
        attributes = {
            "name": config.pop("name"),
            "route_prefix": config.pop("route_prefix", None),
            "import_path": config.pop("import_path"),
            "args": config.pop("args", None),
            "runtime_env": runtime_env,
            "package_source": package_source,
            "deployments": deployments,
            "extra": config,
        }
        apps.append({"name": attributes["name"], "index": index, "attributes": attributes})
    return apps


def _parse_resources(items: list[Any], source: str) -> dict[str, Resource]:
    resources: dict[str, Resource] = {}
    for index, item in enumerate(items):
        where = f"resources[{index}]"
        if not isinstance(item, dict):
            raise SpecError("each resource must be a mapping", source=source, path=where)
        try:
            resource = Resource.model_validate(
                {"type": type_of(str(item.get("address", ""))), **item}
            )
        except Exception as exc:  # pydantic's error, made readable
            raise SpecError(f"invalid resource: {exc}", source=source, path=where) from None
        if not is_address(resource.address) or type_of(resource.address) != resource.type:
            raise SpecError(
                f"invalid address '{resource.address}' (expected <type>.<name>)",
                source=source,
                path=where,
            )
        if resource.type not in RESOURCE_TYPES:
            raise SpecError(
                f"unknown resource type '{resource.type}'",
                source=source,
                path=where,
                hint="known types: " + ", ".join(sorted(RESOURCE_TYPES)),
            )
        if resource.address in resources:
            raise SpecError(f"duplicate address {resource.address}", source=source, path=where)
        resources[resource.address] = resource
    return resources

"""The first-boot script of cloud nodes (EC2 user-data, GCE startup-script), from
``templates/cloud-node-bootstrap.sh.j2``.

A launch template (or instance template) carries ``bootstrap``: the facts the script needs
(role, head address, Ray ports and version, where to keep files). The script is rendered from
them whenever it is needed, so the plan shows a change of those facts, not a diff of a script,
and an edit of the template in a new provisioner release shows as a changed script.
"""

from __future__ import annotations

from typing import Any, Mapping

from provisioner.templates import render

UNIT_NAME = "provisioner-ray.service"
KEYS = ("role", "cluster", "node_dir", "python", "install", "ray_version", "head_address",
        "node_ip", "gcs_port", "dashboard_port", "num_cpus")


def installed_ray_version() -> str:
    """The Ray this provisioner runs with: nodes get the same by default (client and cluster
    must agree on Ray's version)."""
    from importlib.metadata import version

    return version("ray")


def render_bootstrap(address: str, bootstrap: Mapping[str, Any],
                     unit_dir: str = "/etc/systemd/system") -> str:
    facts = {key: bootstrap.get(key) for key in KEYS}
    facts["ray_version"] = facts["ray_version"] or installed_ray_version()
    ray_dir = f"{facts['node_dir']}/ray"
    supervisor = render(
        "ray-node-supervisor.sh.j2", address=address, role=facts["role"], ray_dir=ray_dir,
        python=facts["python"], node_ip=facts["node_ip"], gcs_port=facts["gcs_port"],
        dashboard_port=facts["dashboard_port"], num_cpus=facts["num_cpus"],
        dashboard_host="0.0.0.0")
    unit = render("ray-node.service.j2", address=address,
                  supervisor_path=f"{ray_dir}/supervisor.sh")
    return render("cloud-node-bootstrap.sh.j2", address=address, supervisor=supervisor.rstrip(),
                  unit=unit.rstrip(), unit_name=UNIT_NAME, unit_dir=unit_dir, **facts)


CHANGED_OUTSIDE = {"changed_outside_provisioner": True}


def bootstrap_behind(address: str, script: str, recorded: Any) -> dict[str, Any]:
    """The bootstrap facts behind a node's first-boot ``script`` as read from the cloud: the
    recorded ones when they render to exactly that script, else a marker that differs from any
    desired value (so the plan shows a change)."""
    if isinstance(recorded, dict) and render_bootstrap(address, recorded) == script:
        return dict(recorded)
    return dict(CHANGED_OUTSIDE)

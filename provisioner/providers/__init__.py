"""Resource types by name, imported only when a plan needs them (keeps the CLI start fast).

Each entry implements :class:`provisioner.providers.base.ResourceType`;
``tests/test_provider_contract.py`` checks that every one implements the whole contract.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from provisioner.errors import SpecError
from provisioner.providers.base import ProviderContext, ResourceType

RESOURCE_TYPES: dict[str, str] = {
    "aws_autoscaling_group": "provisioner.providers.aws.autoscaling:AutoScalingGroup",
    "aws_instance": "provisioner.providers.aws.ec2:Instance",
    "aws_launch_template": "provisioner.providers.aws.ec2:LaunchTemplate",
    "aws_lb": "provisioner.providers.aws.elb:LoadBalancer",
    "aws_lb_listener": "provisioner.providers.aws.elb:Listener",
    "aws_lb_target": "provisioner.providers.aws.elb:TargetRegistration",
    "aws_lb_target_group": "provisioner.providers.aws.elb:TargetGroup",
    "aws_network_interface": "provisioner.providers.aws.ec2:NetworkInterface",
    "aws_security_group": "provisioner.providers.aws.ec2:SecurityGroup",
    "gcp_address": "provisioner.providers.gcp.network:Address",
    "gcp_backend_service": "provisioner.providers.gcp.lb:BackendService",
    "gcp_firewall": "provisioner.providers.gcp.network:Firewall",
    "gcp_forwarding_rule": "provisioner.providers.gcp.lb:ForwardingRule",
    "gcp_global_forwarding_rule": "provisioner.providers.gcp.lb:GlobalForwardingRule",
    "gcp_health_check": "provisioner.providers.gcp.lb:HealthCheck",
    "gcp_instance": "provisioner.providers.gcp.compute:Instance",
    "gcp_instance_group": "provisioner.providers.gcp.compute:InstanceGroup",
    "gcp_instance_group_manager": "provisioner.providers.gcp.compute:InstanceGroupManager",
    "gcp_instance_template": "provisioner.providers.gcp.compute:InstanceTemplate",
    "gcp_region_backend_service": "provisioner.providers.gcp.lb:RegionBackendService",
    "gcp_region_health_check": "provisioner.providers.gcp.lb:RegionHealthCheck",
    "gcp_region_instance_group_manager":
        "provisioner.providers.gcp.compute:RegionInstanceGroupManager",
    "gcp_target_http_proxy": "provisioner.providers.gcp.lb:TargetHttpProxy",
    "gcp_url_map": "provisioner.providers.gcp.lb:UrlMap",
    "haproxy_lb": "provisioner.providers.haproxy:HAProxyLB",
    "local_ray_head": "provisioner.providers.local:LocalRayHead",
    "memory_resource": "provisioner.providers.memory:MemoryResource",
    "ray_node": "provisioner.providers.ray_node:RayNode",
    "serve_app": "provisioner.providers.serve_app:ServeApp",
    "ssh_host": "provisioner.providers.ssh_host:SSHHost",
}


@lru_cache(maxsize=None)
def resource_type_class(type_name: str) -> type[ResourceType]:
    try:
        module_name, class_name = RESOURCE_TYPES[type_name].split(":")
    except KeyError:
        raise SpecError(
            f"unknown resource type '{type_name}'",
            hint="known types: " + ", ".join(sorted(RESOURCE_TYPES)),
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


class Providers:
    """One instance of each resource type for a run, sharing the run's context."""

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx
        self._instances: dict[str, ResourceType] = {}

    def get(self, type_name: str) -> ResourceType:
        if type_name not in self._instances:
            self._instances[type_name] = resource_type_class(type_name)(self.ctx)
        return self._instances[type_name]

"""Which :class:`~provisioner.remote.runner.Runner` reaches a resource's machine.

A resource names its machine with a ``target`` attribute: ``None`` (or absent) for this machine,
else an SSH target mapping ``{address, port, user, key_file, host_key, alias}`` (see
``provisioner.remote.ssh``). SSH support is imported only when a target needs it.
"""

from __future__ import annotations

from typing import Any, Mapping

from provisioner.remote.runner import LocalRunner, Runner


def runner_for(target: Mapping[str, Any] | None, address: str | None = None) -> Runner:
    """``address``: the resource acting, so errors can say what to do about it. A target made
    by an ``ssh_host`` names it (``host_resource``): a host key problem is that host's to fix,
    whichever resource met it."""
    if not target:
        return LocalRunner()
    from provisioner.remote.ssh import runner_for_target

    target = dict(target)
    owner = target.pop("host_resource", None)
    return runner_for_target(target, resource_address=owner or address)


def quick(target: Mapping[str, Any] | None, timeout_s: float = 3.0) -> Mapping[str, Any] | None:
    """``target`` for a probe that must answer fast (is this machine there at all?): one
    connect attempt with a short timeout instead of the retries a change deserves."""
    if not target:
        return target
    return {**target, "connect_timeout_s": timeout_s, "connect_attempts": 1}

"""pytest integration of the test-host harness.

- :func:`require_root_and_netns` — call first in a test that needs hosts: skips with the reason
  when this machine can't make them (not root, no namespaces, no sshd), and fails instead under
  ``CI=true``, where the harness must work (``.ci/run`` installs openssh-server as root).
- :func:`harness_hosts` — context manager: ``with harness_hosts(["head", "w1"]) as info:``;
  always runs ``down()`` at the end, also when the test fails.
- :func:`harness_factory` — fixture: ``info = harness_factory(["head", "w1"])``; every harness
  it made is downed at teardown. Use it from another module by importing it:
  ``from tests.harness.fixtures import harness_factory``.

``info.harness`` is the live :class:`~tests.harness.Harness` (``kill``, ``restart``, ``exec``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import pytest

from tests.harness.hosts import Harness
from tests.harness.model import HarnessInfo
from tests.harness.sshd import SSHD


def require_root_and_netns() -> None:
    """Skip (or under CI=true fail) unless hosts can be made here."""
    problem = _host_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"test hosts are required under CI but {problem}", pytrace=False)
    pytest.skip(f"test hosts unavailable: {problem}")


@functools.lru_cache(maxsize=1)
def _host_problem() -> str | None:
    """Why this machine can't make hosts, or None. Probed once per test session."""
    if os.geteuid() != 0:
        return "not running as root (namespaces, mounts and sshd need it)"
    missing = [tool for tool in ("ip", "unshare", "nsenter", "mount", "ssh", "ssh-keygen")
               if not shutil.which(tool)]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if not os.access(SSHD, os.X_OK) and not shutil.which("apt-get"):
        return f"{SSHD} is missing and apt-get is not available to install openssh-server"
    # The same namespaces a host uses, made and dropped at once.
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--uts", "--mount-proc",
                            "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode:
        return f"cannot create PID/mount/UTS namespaces: {probe.stderr.strip()}"
    netns = f"harnessprobe-{os.getpid()}"
    added = subprocess.run(["ip", "netns", "add", netns], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    if added.returncode:
        return f"cannot create network namespaces: {added.stderr.strip()}"
    return None


@contextmanager
def harness_hosts(names: Sequence[str], **harness_options: Any) -> Iterator[HarnessInfo]:
    """Hosts ``names`` for the duration of the block; see the module docstring."""
    require_root_and_netns()
    harness = Harness(**harness_options)
    try:
        yield harness.up(names)
    finally:
        harness.down()


@pytest.fixture
def harness_factory() -> Iterator[Callable[..., HarnessInfo]]:
    """``harness_factory(names, **Harness options) -> HarnessInfo``; all downed at teardown."""
    made: list[Harness] = []

    def make(names: Sequence[str], **harness_options: Any) -> HarnessInfo:
        require_root_and_netns()
        harness = Harness(**harness_options)
        made.append(harness)
        return harness.up(names)

    yield make
    errors = []
    for harness in reversed(made):  # every harness is downed even when one down fails
        try:
            harness.down()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others
            errors.append(exc)
    if errors:
        raise errors[0]

"""The first-boot script of cloud nodes, run for real: rendered for a head, executed by sh on
this machine as cloud-init would run it, it must leave our node supervisor running Ray, and the
head's dashboard must then say the GCS is healthy (what ``recover`` asks a cloud head).

Only systemd is stood in for: this machine runs none, so ``systemctl`` on the script's PATH is
a shim that starts the unit's ``ExecStart`` in the background (what ``enable --now`` does).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from provisioner.providers.bootstrap import UNIT_NAME, render_bootstrap
from provisioner.providers.cloud import dashboard_gcs_health
from tests.support import free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SYSTEMCTL_SHIM = """#!/bin/sh
# systemctl for a machine without systemd: `enable --now UNIT` starts the unit's ExecStart.
log="$(dirname "$0")/systemctl.log"
echo "$@" >> "$log"
[ "$1" = daemon-reload ] && exit 0
[ "$1" = enable ] && [ "$2" = --now ] || exit 1
command=$(sed -n 's/^ExecStart=//p' "{unit_dir}/$3")
setsid nohup $command > "{unit_dir}/$3.log" 2>&1 < /dev/null &
"""


def test_a_head_bootstrap_starts_ray_under_our_supervisor(tmp_path: Path) -> None:
    gcs_port, dashboard_port = free_ports(2)
    # Ray's socket paths live under the node directory and must stay under 108 bytes.
    node_dir = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp"))
    unit_dir, bin_dir = tmp_path / "units", tmp_path / "bin"
    unit_dir.mkdir()
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(SYSTEMCTL_SHIM.format(unit_dir=unit_dir))
    (bin_dir / "systemctl").chmod(0o755)
    script = render_bootstrap("gcp_instance.head", {
        "role": "head", "cluster": "boot", "node_dir": str(node_dir), "python": sys.executable,
        "install": True, "ray_version": None, "head_address": None, "node_ip": "127.0.0.1",
        "gcs_port": gcs_port, "dashboard_port": dashboard_port, "num_cpus": 1,
    }, unit_dir=str(unit_dir))
    (tmp_path / "user-data.sh").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    supervisor_pid = node_dir / "ray" / "supervisor.pid"
    try:
        ran = subprocess.run(["sh", str(tmp_path / "user-data.sh")], env=env,
                             capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert (unit_dir / UNIT_NAME).is_file()
        assert (bin_dir / "systemctl.log").read_text().splitlines() == [
            "daemon-reload", f"enable --now {UNIT_NAME}"]
        assert oct((node_dir / "ray").stat().st_mode & 0o777) == "0o700"  # umask 077

        url = f"http://127.0.0.1:{dashboard_port}"
        deadline = time.monotonic() + 120
        while (problem := dashboard_gcs_health(url)) is not None:
            assert time.monotonic() < deadline, (
                f"{problem}; supervisor log:\n{(unit_dir / (UNIT_NAME + '.log')).read_text()}")
            time.sleep(1)
        assert supervisor_pid.is_file()
    finally:
        stop_everything_under(node_dir, supervisor_pid)
    assert dashboard_gcs_health(f"http://127.0.0.1:{dashboard_port}") is not None


def stop_everything_under(node_dir: Path, supervisor_pid: Path) -> None:
    """SIGTERM the supervisor (its trap stops Ray), wait for it, then kill whatever still runs
    from ``node_dir`` and remove it."""
    try:
        pid = int(supervisor_pid.read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.3)
    except (OSError, ValueError):
        pass
    subprocess.run(["pkill", "-9", "-f", str(node_dir)], check=False)
    shutil.rmtree(node_dir, ignore_errors=True)

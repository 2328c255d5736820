"""Cold apply and no-op re-apply of a Ray Serve cluster over SSH: provisioner against Ray's own
cluster launcher, on the same namespace test hosts, in one run.

    python bench/bench_ssh_apply.py                    # both contenders (about 5-8 minutes)
    python bench/bench_ssh_apply.py --only provisioner # or --only launcher
    python bench/bench_ssh_apply.py --noop-runs 5      # more no-op applies of provisioner
    python bench/bench_ssh_apply.py --launcher-autoscaler v2   # the launcher's default autoscaler

Needs root (the test harness makes the hosts: Linux namespaces with a real sshd each), Ray,
haproxy, ssh, and rsync (Ray's launcher copies files with it). Hosts lb, head, w1, w2, w3 on
10.237.8.10-14 (harness prefix ``prvb``); no traffic leaves this machine.

1. **provisioner**: ``examples/ssh/cluster.yaml`` with the quickstart's ``serve.yaml`` and app
   dir, ``python -m provisioner apply --auto-approve --var-file hosts.json --var python=...``.
   Clock: from the process start until ``GET <lb>/hello`` answers 200 "hello world (v1)" and
   ``GET <lb>/api/square/3`` answers 200, polled every 0.2 s after the process ends. Then the
   same ``apply`` again, unchanged (the no-op; Ray session ids on the nodes must not change),
   then ``destroy``.
2. Every host is restarted empty (``harness.restart``: same address and host key).
3. **Ray's cluster launcher**: ``ray up -y`` of a ``provider: {type: local}`` config (head + 3
   worker IPs, this machine's Python, no setup commands, the app dir as a ``file_mounts`` entry
   because ``serve deploy`` sends the config as it is and a Serve config only takes remote or
   ``local://`` working_dirs), then ``serve deploy`` of the same manifest to the head's dashboard
   (retried while the dashboard is not up yet), then HAProxy on the lb host with the config
   provisioner renders (``templates/haproxy.cfg.j2``), started over ssh. Clock: from the ``ray
   up`` start until both routes answer through the LB. Then ``ray up -y`` again on the unchanged
   cluster (does it restart Ray? session ids and raylet pids before/after), then ``ray down
   -y``. The head's autoscaler is v1 (``RAY_UP_enable_autoscaler_v2=0``, the switch ``ray up``
   prints) unless ``--launcher-autoscaler v2``: with Ray 2.60's default v2, the local provider
   counts the head as one of the workers and never starts the third.

Also measured, for both: when all 4 Ray nodes are alive (the dashboard's node list, read on the
head), since the launcher's ``ray up`` returns with the head only and its autoscaler adds the
workers afterwards.

Goals (issue): provisioner's cold apply at most 1/3 of the launcher's; no-op re-apply < 2 s.
Cleanup (``finally``, also on failure or SIGTERM): destroy / ray down, HAProxy stopped,
``harness.down()``, the launcher's files on this machine removed, and a check that no raylet,
gcs_server or haproxy process of these hosts survives.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    REPO,
    BenchError,
    exit_cleanly_on_sigterm,
    executable,
    machine_header,
    run,
    seconds,
    table,
)

if str(REPO) not in sys.path:  # tests.harness lives at the repository root
    sys.path.insert(0, str(REPO))

PREFIX, SUBNET = "prvb", "10.237.8"
HOSTS = ("lb", "head", "w1", "w2", "w3")
RAY_HOSTS = ("head", "w1", "w2", "w3")
WORKERS = ("w1", "w2", "w3")
LB_PORT = 8080
SERVE_PORT = 8000
DASHBOARD_PORT = 8265
RATIO_GOAL = 3.0  # provisioner at most 1/3 of the launcher's time
NOOP_GOAL_S = 2.0
POLL_S = 0.2
HELLO_BODY = "hello world (v1)"

# Ray's session dir on a node, per contender (both are private to a host: /var/lib/provisioner
# and /tmp are per-host directories in the harness).
PROVISIONER_SESSION = "/var/lib/provisioner/ray/tmp/session_latest"
LAUNCHER_SESSION = "/tmp/ray/session_latest"
# Where the launcher's file_mounts put the Serve app on every node, and HAProxy's dir on lb.
REMOTE_APP_DIR = "/tmp/prvb-serve-app"
LB_NODE_DIR = "/tmp/prvb-lb"
LB_NAME = "bench"

APPLY_TIMEOUT_S = 480.0
RAY_UP_TIMEOUT_S = 300.0
DEPLOY_WINDOW_S = 90.0
ROUTES_TIMEOUT_S = 180.0
NODES_TIMEOUT_S = 120.0
AFTER_NOOP_WINDOW_S = 15.0

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


# -- small helpers ----------------------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int | None, str]:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (OSError, ValueError):
        return None, ""


def routes_ok(lb_url: str) -> bool:
    status, body = http_get(f"{lb_url}/hello")
    if status != 200 or body.strip() != HELLO_BODY:
        return False
    status, body = http_get(f"{lb_url}/api/square/3")
    if status != 200:
        return False
    try:
        return json.loads(body).get("square") == 9
    except (ValueError, AttributeError):
        return False


def wait_until(check, timeout: float, interval: float = POLL_S) -> float | None:
    """Poll ``check()`` until true; the perf_counter when it was, None after ``timeout``."""
    deadline = time.perf_counter() + timeout
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            return None
        time.sleep(interval)


def tail(text: str, lines: int = 20) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def failure(error: Exception) -> str:
    if isinstance(error, BenchError):
        return str(error)
    return f"{type(error).__name__}: {error}\n{tail(traceback.format_exc(), 6)}"


def save(path: Path, done) -> None:
    path.write_text(f"# exit {done.code}, {done.seconds:.3f} s\n{done.stdout}\n{done.stderr}")


def describe(sessions: dict[str, str]) -> str:
    """Session ids, the common session name shown once."""
    names = {value.split("/raylet")[0] for value in sessions.values()}
    if len(names) == 1:
        return f"{names.pop()}; raylet pids " + ", ".join(
            f"{k} {v.split('/raylet ')[-1]}" for k, v in sessions.items())
    return ", ".join(f"{k} {v}" for k, v in sessions.items())


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without proxy variables (traffic stays on the bridge), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(extra)
    return env


@dataclass
class Result:
    name: str
    cold: float | None = None            # start -> both routes 200 through the LB
    nodes_alive: float | None = None     # start -> 4 Ray nodes ALIVE
    noop: list[float] = field(default_factory=list)
    restarted: str = "-"                 # did the no-op restart Ray (session ids)
    after_noop: str = "-"                # routes through the LB after the no-op
    phases: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: str | None = None

    @property
    def noop_median(self) -> float | None:
        return statistics.median(self.noop) if self.noop else None


class Hosts:
    """The harness hosts of the whole run, and what is needed to prove they are gone."""

    def __init__(self) -> None:
        from tests.harness import Harness

        self.harness = Harness(prefix=PREFIX, subnet=SUBNET)
        self.info = None
        self.namespaces: set[str] = set()  # "net:[...]" / "pid:[...]" of every host we ran

    def up(self) -> None:
        self.info = self.harness.up(list(HOSTS))
        self._record_namespaces()

    def restart_all(self) -> None:
        for name in HOSTS:
            self.info = self.harness.restart(name)
        self._record_namespaces()

    def _record_namespaces(self) -> None:
        for name in HOSTS:
            pid = self.harness.init_pid(name)
            for kind in ("net", "pid"):
                try:
                    self.namespaces.add(os.readlink(f"/proc/{pid}/ns/{kind}"))
                except OSError:
                    pass

    def address(self, name: str) -> str:
        return self.info.address(name)

    def exec(self, name: str, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return self.harness.exec(name, command, timeout=timeout)

    def sessions(self, path: str) -> dict[str, str]:
        """Per Ray node: the session (a worker takes the head's session name, so it stays the
        same when only a worker restarts) and the raylet's pid (new on any restart)."""
        found = {}
        for name in RAY_HOSTS:
            done = self.exec(name, f"readlink {path}; echo; pgrep -x raylet | head -1")
            session, _, pid = done.stdout.partition("\n")
            found[name] = f"{os.path.basename(session.strip()) or '?'}/raylet {pid.strip() or '-'}"
        return found

    def raylet_running(self, name: str) -> bool:
        return self.exec(name, "pgrep -x raylet >/dev/null").returncode == 0

    def alive_nodes(self) -> int | None:
        """Ray nodes ALIVE per the head's dashboard (read on the head: provisioner's dashboard
        listens on the head's loopback only)."""
        try:
            done = self.exec("head", f"curl -s -m 3 'http://127.0.0.1:{DASHBOARD_PORT}"
                                     "/api/v0/nodes?limit=100'", timeout=10)
            rows = json.loads(done.stdout)["data"]["result"]["result"]
        except (RuntimeError, ValueError, KeyError, TypeError):  # HarnessError: a RuntimeError
            return None
        return sum(1 for row in rows if isinstance(row, dict) and row.get("state") == "ALIVE")

    def survivors(self) -> list[str]:
        """raylet / gcs_server / haproxy processes still in one of our hosts' namespaces."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
                if comm not in ("raylet", "gcs_server", "haproxy"):
                    continue
                spaces = {os.readlink(f"/proc/{entry}/ns/{kind}") for kind in ("net", "pid")}
            except OSError:
                continue
            if spaces & self.namespaces:
                found.append(f"{comm} (pid {entry})")
        return found

    def down(self) -> None:
        self.harness.down()


def restarted_verdict(before: dict[str, str], after: dict[str, str]) -> str:
    """From :meth:`Hosts.sessions` before and after: "no", or which nodes got a new Ray
    (another raylet pid) and on which the raylet is gone."""
    restarted = [name for name in RAY_HOSTS
                 if before[name] != after[name] and not after[name].endswith("/raylet -")]
    gone = [name for name in RAY_HOSTS
            if before[name] != after[name] and after[name].endswith("/raylet -")]
    if not restarted and not gone:
        return "no"
    head_session = after["head"].split("/raylet")[0]
    never = "?/raylet -"  # no session and no raylet: Ray never ran there
    orphaned = [name for name in RAY_HOSTS if before[name] == after[name] != never
                and after[name].split("/raylet")[0] != head_session]
    absent = [name for name in RAY_HOSTS if before[name] == after[name] == never]
    parts = []
    if restarted:
        parts.append("all 4 nodes" if len(restarted) == len(RAY_HOSTS) else ", ".join(restarted))
    if gone:
        parts.append(f"raylet gone on {', '.join(gone)}")
    if orphaned:
        parts.append(f"{', '.join(orphaned)} left on the old session")
    if absent:
        parts.append(f"no Ray on {', '.join(absent)} before or after")
    return f"yes ({'; '.join(parts)})"


def routes_after(lb_url: str) -> str:
    if routes_ok(lb_url):
        return "200"
    back = wait_until(lambda: routes_ok(lb_url), AFTER_NOOP_WINDOW_S, interval=0.5)
    return "back later" if back else f"down (> {AFTER_NOOP_WINDOW_S:g} s)"


# -- contender 1: provisioner -----------------------------------------------------------------


def bench_provisioner(hosts: Hosts, work: Path, logs: Path, noop_runs: int) -> Result:
    result = Result("provisioner apply")
    ssh_dir = work / "ssh"
    ssh_dir.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "ssh" / "cluster.yaml", ssh_dir / "cluster.yaml")
    (work / "quickstart").mkdir()
    shutil.copy(REPO / "examples" / "quickstart" / "serve.yaml", work / "quickstart" / "serve.yaml")
    shutil.copytree(REPO / "examples" / "quickstart" / "app", work / "quickstart" / "app")
    (work / "hosts.json").write_text(json.dumps(hosts.info.to_json(), indent=2))
    common = ["--var-file", str(work / "hosts.json"), "--var", f"python={sys.executable}"]
    cli = [sys.executable, "-m", "provisioner"]
    env = clean_env()
    lb_url = f"http://{hosts.address('lb')}:{LB_PORT}"
    applied = False
    try:
        started = time.perf_counter()
        apply = run([*cli, "apply", "--auto-approve", *common], cwd=ssh_dir,
                    timeout=APPLY_TIMEOUT_S, env=env)
        applied = True  # whatever it made must be destroyed, also after a failure
        save(logs / "provisioner-apply.log", apply)
        if apply.code != 0:
            raise BenchError(f"apply exited {apply.code}:\n{tail(apply.stdout + apply.stderr)}")
        ready = wait_until(lambda: routes_ok(lb_url), ROUTES_TIMEOUT_S)
        if ready is None:
            raise BenchError(f"routes did not answer through {lb_url} within "
                             f"{ROUTES_TIMEOUT_S:g} s after apply")
        result.cold = ready - started
        result.phases += [("apply process", seconds(apply.seconds)),
                          ("routes after apply", seconds(ready - started - apply.seconds))]
        alive = wait_until(lambda: hosts.alive_nodes() == len(RAY_HOSTS), NODES_TIMEOUT_S, 0.5)
        result.nodes_alive = None if alive is None else alive - started
        output = run([*cli, "output", "lb_url", *common], cwd=ssh_dir, env=env)
        if output.code == 0 and output.stdout.strip() != lb_url:
            result.notes.append(f"provisioner output lb_url = {output.stdout.strip()!r}, "
                                f"polled {lb_url}")

        before = hosts.sessions(PROVISIONER_SESSION)
        for index in range(noop_runs):
            noop = run([*cli, "apply", "--auto-approve", *common], cwd=ssh_dir,
                       timeout=APPLY_TIMEOUT_S, env=env)
            save(logs / f"provisioner-noop-{index + 1}.log", noop)
            if noop.code != 0:
                raise BenchError(f"no-op apply exited {noop.code}:\n"
                                 f"{tail(noop.stdout + noop.stderr)}")
            if "no changes" not in (noop.stdout + noop.stderr).lower():
                result.notes.append("a no-op apply did not say 'No changes':\n"
                                    + tail(noop.stdout, 8))
            result.noop.append(noop.seconds)
        result.after_noop = routes_after(lb_url)
        after = hosts.sessions(PROVISIONER_SESSION)
        result.restarted = restarted_verdict(before, after)
        result.phases.append(("no-op applies", ", ".join(seconds(t) for t in result.noop)))
        result.phases.append(("sessions before no-op", describe(before)))
        result.phases.append(("sessions after no-op", describe(after)))
    except Exception as error:  # noqa: BLE001 - reported in the table; cleanup follows
        result.failed = failure(error)
    finally:
        if applied:
            destroy = run([*cli, "destroy", "--auto-approve", *common], cwd=ssh_dir,
                          timeout=APPLY_TIMEOUT_S, env=env)
            save(logs / "provisioner-destroy.log", destroy)
            result.phases.append(("destroy", seconds(destroy.seconds)))
            if destroy.code != 0:
                result.notes.append(f"destroy exited {destroy.code} (the hosts are restarted "
                                    f"empty anyway):\n{tail(destroy.stdout + destroy.stderr)}")
    return result


# -- contender 2: Ray's cluster launcher ------------------------------------------------------


def launcher_ssh_options() -> dict[str, str]:
    """The ssh options Ray's launcher always passes (from the installed Ray, not from memory)."""
    code = ("import json; from ray.autoscaler._private.command_runner import SSHOptions; "
            "print(json.dumps({k: str(v) for k, v in SSHOptions(None).arg_dict.items()}))")
    done = run([sys.executable, "-c", code], timeout=120)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": done.tail(3)}


def launcher_config(hosts: Hosts, cluster_name: str, app_dir: Path) -> dict:
    ray = f"{shlex.quote(sys.executable)} -m ray.scripts.scripts"
    # Ray >= 2.52 turns token auth on by itself when ~/.ray/auth_token exists (/root is shared
    # by the hosts and this machine): switched off explicitly, as provisioner does.
    env = "export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0; "
    return {
        "cluster_name": cluster_name,
        "provider": {"type": "local", "head_ip": hosts.address("head"),
                     "worker_ips": [hosts.address(name) for name in WORKERS]},
        "auth": {"ssh_user": hosts.info.user, "ssh_private_key": hosts.info.key_file},
        "min_workers": len(WORKERS),
        "max_workers": len(WORKERS),
        # The Serve app on every node (head by `ray up`, workers by the autoscaler).
        "file_mounts": {REMOTE_APP_DIR: str(app_dir)},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [
            f"{env}{ray} stop",
            f"{env}{ray} start --head --port=6379 --dashboard-host=0.0.0.0 "
            f"--dashboard-port={DASHBOARD_PORT} "
            "--autoscaling-config=~/ray_bootstrap_config.yaml --disable-usage-stats",
        ],
        "worker_start_ray_commands": [
            f"{env}{ray} stop",
            f"{env}{ray} start --address=$RAY_HEAD_IP:6379 --disable-usage-stats",
        ],
    }


def launcher_serve_config(manifest: Path) -> dict:
    """The quickstart's serve.yaml as `serve deploy` needs it: working_dir = the directory the
    file_mounts put on every node, and the proxies on all interfaces (HAProxy is on another
    host), as provisioner's spec sets with serve.http_host."""
    import yaml

    config = yaml.safe_load(manifest.read_text())
    for app in config["applications"]:
        app.setdefault("runtime_env", {})["working_dir"] = f"local://{REMOTE_APP_DIR}"
    config["http_options"] = {"host": "0.0.0.0", "port": SERVE_PORT}
    return config


def haproxy_config(hosts: Hosts) -> tuple[str, str]:
    """provisioner's own rendering of templates/haproxy.cfg.j2 (same checks and timeouts)."""
    from provisioner.providers import haproxy

    address = f"haproxy_lb.{LB_NAME}"
    config = haproxy.check_desired(address, {
        "target": None, "name": LB_NAME, "node_dir": LB_NODE_DIR, "bind_address": "0.0.0.0",
        "listen_port": LB_PORT,
        "backends": [{"name": name, "address": hosts.address(name), "port": SERVE_PORT}
                     for name in RAY_HOSTS]})
    return haproxy.render(address, config), haproxy.Layout.of(LB_NODE_DIR, LB_NAME).dir


def start_haproxy(hosts: Hosts, text: str, directory: str) -> None:
    """Over ssh (host key verified against the harness's known_hosts), as a user would."""
    q = shlex.quote
    cfg, log, pid = (f"{directory}/haproxy.{suffix}" for suffix in ("cfg", "log", "pid"))
    remote = (f"mkdir -p {q(directory)} && cat > {q(cfg)} && cd {q(directory)} && "
              f"{{ setsid haproxy -W -S {q(directory)}/master.sock,mode,600 -p {q(pid)} "
              f"-f {q(cfg)} </dev/null >>{q(log)} 2>&1 & }}")
    done = subprocess.run(hosts.info.ssh_command("lb", remote), input=text, text=True,
                          capture_output=True, timeout=60)
    if done.returncode:
        raise BenchError(f"starting HAProxy on lb failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-500:]}")


def stop_haproxy(hosts: Hosts, directory: str) -> None:
    hosts.exec("lb", f"[ -f {directory}/haproxy.pid ] && kill $(cat {directory}/haproxy.pid); "
                     "sleep 0.5; pkill -x haproxy; true", timeout=20)


def bench_launcher(hosts: Hosts, work: Path, logs: Path, cluster_name: str,
                   autoscaler: str) -> Result:
    import yaml

    default = " (Ray's default)" if autoscaler == "v2" else ""
    result = Result(f"ray up + serve deploy + HAProxy, autoscaler {autoscaler}{default}")
    if shutil.which("rsync") is None:
        result.failed = "rsync is not installed (Ray's launcher copies file_mounts with it)"
        return result
    home = Path(os.path.expanduser("~"))
    for path in bootstrap_files():
        if path.exists():
            # The hosts share /root with this machine: `ray up` would overwrite another
            # launcher cluster's files.
            result.failed = f"{path} already exists (another launcher cluster?); not touched"
            return result
    app_dir = work / "launcher-app"
    shutil.copytree(REPO / "examples" / "quickstart" / "app", app_dir)
    cluster_yaml = work / "launcher.yaml"
    cluster_yaml.write_text(yaml.safe_dump(launcher_config(hosts, cluster_name, app_dir),
                                           sort_keys=False))
    serve_yaml = work / "launcher-serve.yaml"
    serve_yaml.write_text(yaml.safe_dump(launcher_serve_config(
        REPO / "examples" / "quickstart" / "serve.yaml"), sort_keys=False))
    lb_text, lb_dir = haproxy_config(hosts)
    ray_cli, serve_cli = executable("ray"), executable("serve")
    # RAY_UP_enable_autoscaler_v2: the switch `ray up` itself prints (v2 is the default since
    # Ray 2.50); it is passed on to the head's autoscaler by `ray up`.
    env = clean_env(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
                    RAY_UP_enable_autoscaler_v2="1" if autoscaler == "v2" else "0")
    lb_url = f"http://{hosts.address('lb')}:{LB_PORT}"
    dashboard = f"http://{hosts.address('head')}:{DASHBOARD_PORT}"
    up_started = False
    try:
        started = time.perf_counter()
        up_started = True
        up = run([ray_cli, "up", "-y", str(cluster_yaml)], timeout=RAY_UP_TIMEOUT_S, env=env)
        save(logs / "ray-up-1.log", up)
        if up.code != 0:
            raise BenchError(f"ray up exited {up.code}: {tail(up.stdout + up.stderr, 25)}")
        result.phases.append(("ray up", seconds(up.seconds)))
        deploy_started = time.perf_counter()
        attempts, deploy = 0, None
        while time.perf_counter() - deploy_started < DEPLOY_WINDOW_S:
            attempts += 1
            deploy = run([serve_cli, "deploy", str(serve_yaml), "-a", dashboard], timeout=60,
                         env=env)
            if deploy.code == 0:
                break
            time.sleep(1.0)
        if deploy is None or deploy.code != 0:
            raise BenchError(f"serve deploy failed {attempts} times in {DEPLOY_WINDOW_S:g} s: "
                             f"{tail(deploy.stdout + deploy.stderr if deploy else '', 10)}")
        result.phases.append((f"serve deploy ({attempts} attempt{'s' if attempts > 1 else ''})",
                              seconds(time.perf_counter() - deploy_started)))
        lb_started = time.perf_counter()
        start_haproxy(hosts, lb_text, lb_dir)
        result.phases.append(("HAProxy start over ssh", seconds(time.perf_counter() - lb_started)))
        routes_started = time.perf_counter()
        ready = wait_until(lambda: routes_ok(lb_url), ROUTES_TIMEOUT_S)
        if ready is None:
            raise BenchError(f"routes did not answer through {lb_url} within "
                             f"{ROUTES_TIMEOUT_S:g} s after serve deploy")
        result.cold = ready - started
        result.phases.append(("routes after HAProxy start", seconds(ready - routes_started)))
        now_alive = hosts.alive_nodes()
        result.phases.append(("Ray nodes alive when the routes answered", str(now_alive)))
        alive = wait_until(lambda: hosts.alive_nodes() == len(RAY_HOSTS), NODES_TIMEOUT_S, 0.5)
        result.nodes_alive = None if alive is None else alive - started
        if alive is None:
            result.notes.append(f"only {hosts.alive_nodes()} Ray nodes alive "
                                f"{NODES_TIMEOUT_S:g} s after the routes answered")
        key_copy = home / "ray_bootstrap_key.pem"
        if key_copy.exists():
            result.notes.append("ray up copied the SSH private key to the head as "
                                "~/ray_bootstrap_key.pem (its autoscaler logs into the workers "
                                "with it)")

        before = hosts.sessions(LAUNCHER_SESSION)
        noop = run([ray_cli, "up", "-y", str(cluster_yaml)], timeout=RAY_UP_TIMEOUT_S, env=env)
        save(logs / "ray-up-2.log", noop)
        if noop.code != 0:
            raise BenchError(f"the second ray up exited {noop.code}: "
                             f"{tail(noop.stdout + noop.stderr, 25)}")
        result.noop.append(noop.seconds)
        result.after_noop = routes_after(lb_url)
        after = hosts.sessions(LAUNCHER_SESSION)  # ~15 s later: the autoscaler restarts workers
        result.restarted = restarted_verdict(before, after)
        result.phases.append(("sessions before no-op", describe(before)))
        result.phases.append((f"sessions ~{AFTER_NOOP_WINDOW_S:g} s after no-op", describe(after)))
        result.phases.append((f"Ray nodes alive ~{AFTER_NOOP_WINDOW_S:g} s after no-op",
                              str(hosts.alive_nodes())))
        if "Cluster Ray runtime will be restarted" in noop.stdout + noop.stderr:
            result.notes.append("the second ray up said: 'Cluster Ray runtime will be restarted.'")
    except Exception as error:  # noqa: BLE001 - reported in the table; cleanup follows
        result.failed = failure(error)
    finally:
        try:
            stop_haproxy(hosts, lb_dir)
        except Exception as error:  # noqa: BLE001 - the hosts are restarted/downed anyway
            result.notes.append(f"stopping HAProxy: {error}")
        if up_started:
            down = run([ray_cli, "down", "-y", str(cluster_yaml)], timeout=180, env=env)
            save(logs / "ray-down.log", down)
            result.phases.append(("ray down", seconds(down.seconds)))
            if down.code != 0:
                result.notes.append(f"ray down exited {down.code}: {tail(down.stderr, 5)}")
            left = [name for name in RAY_HOSTS if hosts.raylet_running(name)]
            if left:
                result.notes.append(f"after `ray down`, raylet still ran on {', '.join(left)} "
                                    "(removed by the harness restart/down)")
    return result


def bootstrap_files() -> list[Path]:
    """What `ray up` copies to the head's home, which the hosts share with this machine."""
    home = Path(os.path.expanduser("~"))
    return [home / "ray_bootstrap_config.yaml", home / "ray_bootstrap_key.pem"]


def launcher_local_files(cluster_name: str, keep: set[Path] = frozenset()) -> list[Path]:
    """What `ray up` leaves on this machine for this cluster, except ``keep`` (files that were
    there before the run)."""
    import getpass
    import hashlib

    found = bootstrap_files()
    ray_tmp = Path(tempfile.gettempdir()) / "ray"
    found += [ray_tmp / f"cluster-{cluster_name}.state", ray_tmp / f"cluster-{cluster_name}.lock"]
    user_hash = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
    cluster_hash = hashlib.sha256(cluster_name.encode()).hexdigest()[:10]
    found.append(Path(tempfile.gettempdir()) / f"ray_ssh_{user_hash}" / cluster_hash)
    for cache in Path(tempfile.gettempdir()).glob("ray-config-*"):
        try:
            if cluster_name in cache.read_text(errors="replace"):
                found.append(cache)
        except OSError:
            pass
    return [path for path in found if path.exists() and path not in keep]


def close_ssh_masters(hosts: Hosts, cluster_name: str) -> None:
    """The launcher's ssh ControlMaster processes (ControlPersist 10s) for our hosts."""
    for path in launcher_local_files(cluster_name):
        if path.name.startswith("ray_ssh_") or path.parent.name.startswith("ray_ssh_"):
            for name in RAY_HOSTS:
                subprocess.run(["ssh", "-o", f"ControlPath={path}/%C", "-O", "exit",
                                f"{hosts.info.user}@{hosts.address(name)}"],
                               capture_output=True, timeout=10)


# -- report -----------------------------------------------------------------------------------


def report(results: list[Result], ssh_options: dict[str, str], noop_runs: int) -> None:
    ours = next((r for r in results if r.name.startswith("provisioner")), None)
    theirs = next((r for r in results if r.name.startswith("ray up")), None)

    def cold_cell(r: Result) -> str:
        return f"failed: {r.failed.splitlines()[0][:70]}" if r.failed and r.cold is None \
            else seconds(r.cold)

    rows = []
    for r in results:
        ratio = "-"
        if r is theirs and ours and ours.cold and r.cold:
            ratio = f"{r.cold / ours.cold:.2f}"
        elif r is ours and r.cold:
            ratio = "1.00"
        noop = "-" if r.noop_median is None else (
            seconds(r.noop_median) + (f" (median of {len(r.noop)})" if len(r.noop) > 1 else ""))
        rows.append([r.name, cold_cell(r), seconds(r.nodes_alive), noop, r.restarted,
                     r.after_noop, ratio])
    print(table(["contender", "cold apply -> routes 200 (s)", "4 Ray nodes alive (s)",
                 "no-op re-apply (s)", "Ray restarted on no-op", "routes after no-op",
                 "ratio launcher/provisioner"], rows, align="lllllll",
                title="\n-- cold apply until every route answers through the LB, and the no-op"))

    print()
    if ours and theirs and ours.cold and theirs.cold:
        ratio = theirs.cold / ours.cold
        verdict = "PASS" if ratio >= RATIO_GOAL else "MISS"
        print(f"goal: provisioner cold apply <= 1/3 of the launcher's: {ours.cold:.1f} s vs "
              f"{theirs.cold:.1f} s / 3 = {theirs.cold / 3:.1f} s (launcher/provisioner "
              f"{ratio:.2f}, needs >= {RATIO_GOAL:.2f}) -> {verdict}")
        if ours.nodes_alive and theirs.nodes_alive:
            print(f"  same comparison until all 4 Ray nodes are alive: {ours.nodes_alive:.1f} s vs "
                  f"{theirs.nodes_alive:.1f} s (launcher/provisioner "
                  f"{theirs.nodes_alive / ours.nodes_alive:.2f})")
    else:
        print("goal: provisioner cold apply <= 1/3 of the launcher's: not measured "
              "(a contender failed)")
    if ours and ours.noop_median is not None:
        verdict = "PASS" if ours.noop_median < NOOP_GOAL_S else "MISS"
        print(f"goal: provisioner no-op re-apply < {NOOP_GOAL_S:g} s: "
              f"median {ours.noop_median:.3f} s "
              f"(min {min(ours.noop):.3f}, max {max(ours.noop):.3f}) -> {verdict}; "
              f"Ray restarted: {ours.restarted}")
    if theirs and theirs.noop:
        print(f"launcher no-op (`ray up -y` again): {theirs.noop[0]:.1f} s; Ray restarted: "
              f"{theirs.restarted}; routes after it: {theirs.after_noop}")

    for r in results:
        if r.phases:
            print(table(["step", "value"], r.phases, align="ll", title=f"\n-- {r.name}: steps"))
        for note in r.notes:
            print(f"note: {note}")
        if r.failed:
            print(f"FAILED: {r.failed}")
    if ssh_options:
        shown = ", ".join(f"{k}={v}" for k, v in ssh_options.items()
                          if k in ("StrictHostKeyChecking", "UserKnownHostsFile", "error"))
        print(f"\nlauncher ssh host-key options (ray.autoscaler._private.command_runner."
              f"SSHOptions, always passed): {shown}")


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("provisioner", "launcher"))
    parser.add_argument("--launcher-autoscaler", choices=("v1", "v2"), default="v1",
                        help="autoscaler of the launcher's head (RAY_UP_enable_autoscaler_v2). "
                             "Default v1: with Ray 2.60's default v2, the local provider starts "
                             "only 2 of the 3 workers")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy the output of every timed command to DIR")
    parser.add_argument("--noop-runs", type=int, default=3,
                        help="no-op applies of provisioner (default 3; the launcher's is 1: "
                             "each of its runs restarts the cluster)")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    if os.geteuid() != 0:
        print("needs root (the test harness makes network namespaces and runs sshd)",
              file=sys.stderr)
        return 2
    print(machine_header("bench_ssh_apply.py: cold and no-op apply over SSH, "
                         "provisioner vs ray up"))
    import ray

    print(f"ray       {ray.__version__}; hosts {', '.join(HOSTS)} on {SUBNET}.10-14 "
          f"(harness prefix {PREFIX})")
    cluster_name = f"prvbbench{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="bench-ssh-apply-"))
    logs = work / "logs"
    logs.mkdir()
    hosts = Hosts()
    results: list[Result] = []
    ssh_options: dict[str, str] = {}
    survivors: list[str] = []
    began = time.perf_counter()
    preexisting = {path for path in bootstrap_files() if path.exists()}
    try:
        hosts.up()
        if args.only in (None, "provisioner"):
            print(f"\n[{time.perf_counter() - began:5.0f} s] provisioner ...", flush=True)
            results.append(bench_provisioner(hosts, work / "provisioner", logs, args.noop_runs))
        if args.only is None:
            print(f"[{time.perf_counter() - began:5.0f} s] restarting the hosts empty ...",
                  flush=True)
            hosts.restart_all()
        if args.only in (None, "launcher"):
            print(f"[{time.perf_counter() - began:5.0f} s] ray up ...", flush=True)
            ssh_options = launcher_ssh_options()
            results.append(bench_launcher(hosts, work, logs, cluster_name,
                                          args.launcher_autoscaler))
        print(f"[{time.perf_counter() - began:5.0f} s] done; cleaning up", flush=True)
    except Exception:  # noqa: BLE001 - report what was measured, then clean up
        traceback.print_exc()
    except (KeyboardInterrupt, SystemExit):
        print(f"[{time.perf_counter() - began:5.0f} s] interrupted; cleaning up (harness down)",
              flush=True)
        raise
    finally:
        try:
            if hosts.info is not None:
                close_ssh_masters(hosts, cluster_name)
        except Exception:  # noqa: BLE001
            pass
        try:
            hosts.down()
        finally:
            for path in launcher_local_files(cluster_name, keep=preexisting):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                    try:
                        path.parent.rmdir()  # /tmp/ray_ssh_<user hash>, only when empty
                    except OSError:
                        pass
                else:
                    path.unlink(missing_ok=True)
            if args.keep_logs:
                shutil.copytree(logs, args.keep_logs, dirs_exist_ok=True)
            survivors = hosts.survivors()
            if survivors:
                print(f"LEFT OVER in our hosts' namespaces: {', '.join(survivors)}",
                      file=sys.stderr, flush=True)
            shutil.rmtree(work, ignore_errors=True)
    report(results, ssh_options, args.noop_runs)
    print(f"\ncleanup: harness down; raylet/gcs_server/haproxy left in our hosts' namespaces: "
          f"{', '.join(survivors) or 'none'}; whole run {time.perf_counter() - began:.0f} s")
    return 0 if results and not any(r.failed for r in results) and not survivors else 1


if __name__ == "__main__":
    sys.exit(main())

"""``haproxy_lb``: one HAProxy 2.6 in front of the Serve proxies of a cluster, on one machine.

Implements :class:`provisioner.providers.base.ResourceType` (see there for the contract), acting
only through a :class:`~provisioner.remote.runner.Runner` (``runner_for(target)``), so the same
code drives this machine, a namespace host or a VM.

Attributes (desired): ``target`` (None = this machine, else an SSH target), ``name``,
``node_dir``, ``bind_address`` (default 0.0.0.0), ``listen_port``, ``backends`` (list of
``{name, address, port}``; order does not matter), ``install`` (default false: install HAProxy
with apt-get when missing), ``health`` (overrides of path ``/-/healthz``, inter_ms 1000, fall 2,
rise 2). Computed: ``url``, ``config_digest`` (sha256 of the config in place), ``master_pid``.

Everything lives in ``<node_dir>/haproxy/<name>/``: ``owner.json`` (the marker: address, token,
cluster, lineage, attributes; written *before* HAProxy starts, so ``list`` finds an interrupted
create), ``haproxy.cfg`` (rendered from ``templates/haproxy.cfg.j2``), ``haproxy.pid``,
``master.sock`` (master CLI), ``stats.sock``, ``server-state`` and ``haproxy.log``.

HAProxy runs master-worker (``-W``) in the foreground of its own session (``setsid``), its
stderr appended to ``haproxy.log``, rather than with ``-D``: a daemon master sends its stderr to
/dev/null and HAProxy 2.6 has no other place that keeps why a reload failed (its master CLI has
no ``show startup-logs``), while the foreground master writes ``[ALERT] ... cannot bind socket``
and ``Loading failure!`` to the log, where :meth:`HAProxyLB.update` reads them.

A change of config is a reload, never a restart: the new config is checked (``haproxy -c``),
swapped in, the health states of the servers that stay are saved (``show servers state`` ->
``server-state``, see :func:`~provisioner.providers.haproxy_readers.carry_server_states`) and
the master is told to ``reload``; its new worker takes the listening sockets over from the old one
(``expose-fd listeners``), so no connection is refused, and the old worker finishes what it
serves. A reload that fails leaves the old worker serving the old config (HAProxy's own
behaviour) and the old file is put back. An unchanged config (same digest) is not reloaded.

Talking to HAProxy's unix sockets needs a client on the machine; ``python3`` is used (present
wherever Ray runs; ``install: true`` installs it with HAProxy when missing).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
import time
from dataclasses import dataclass
from typing import Any, Mapping

from provisioner.errors import ProviderError
from provisioner.providers import haproxy_readers as readers
from provisioner.providers.base import ListScope, LiveResource, ResourceType
from provisioner.remote.runner import Runner

DEFAULT_HEALTH: dict[str, Any] = {"path": "/-/healthz", "inter_ms": 1000, "fall": 2, "rise": 2}
DESIRED = ("target", "name", "node_dir", "bind_address", "listen_port", "backends", "install",
           "health")
REQUIRED = ("name", "node_dir", "listen_port", "backends")
COMPUTED = ("url", "config_digest", "master_pid")
TEMPLATE = "haproxy.cfg.j2"

START_TIMEOUT_S = 20.0
RELOAD_TIMEOUT_S = 30.0
SOFT_STOP_S = 10.0
POLL_S = 0.1
# sun_path holds 108 bytes and HAProxy binds "<path>.<pid>.tmp" before renaming it into place.
SOCKET_PATH_LIMIT = 90
WILDCARDS = {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "": "127.0.0.1", "::": "::1"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
_SERVER_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NO_SPACE = re.compile(r"^[^\s#'\"\\]+$")

# Runs on the machine (``python3 -c``): the socket client, probes and the stop sequence. One
# command per step keeps an SSH target at one round trip per step.
_HELPER = r'''
import hashlib, json, os, signal, socket, sys, time

def cli(path, command, timeout=5.0):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks).decode(errors="replace")
            chunks.append(data)
    finally:
        sock.close()

def master(d, pid=None):
    try:
        with open(d + "/haproxy.pid") as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    if pid is None:
        return None, False
    for _ in range(10):  # a master re-executing itself can show a torn command line
        try:
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except (OSError, IndexError):
            return pid, False
        if state in ("Z", "X"):
            return pid, False
        if d + "/haproxy.cfg" in args:
            return pid, True
        time.sleep(0.02)
    return pid, False

def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False

def ours(d):
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if entry.isdigit() and d + "/haproxy.cfg" in args:
            found.append(int(entry))
    return found

def tail(path, offset):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(65536).decode(errors="replace")
    except OSError:
        return ""

op, args = sys.argv[1], sys.argv[2:]
if op == "cli":
    try:
        sys.stdout.write(cli(args[0], args[1]))
    except OSError as error:
        sys.exit("%s: %s" % (args[0], error))
elif op == "reload":
    try:
        cli(args[0], "reload")
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        pass  # the master closes its CLI as it re-executes itself
elif op == "probe":
    d = args[0]
    pid, alive = master(d, int(args[4]) if len(args) > 4 else None)
    proc = None
    if alive:
        try:
            proc = cli(d + "/master.sock", "show proc", 2.0)
        except OSError:
            pass
    try:
        socket.create_connection((args[1], int(args[2])), timeout=1.0).close()
        accepts = True
    except OSError:
        accepts = False
    print(json.dumps({"pid": pid, "alive": alive, "running": bool(pid) and running(pid),
                      "proc": proc, "accepts": accepts,
                      "log": tail(d + "/haproxy.log", int(args[3]))}))
elif op == "inventory":
    for d in args:
        d = d.rstrip("/")
        try:
            with open(d + "/owner.json") as f:
                owner = f.read()
        except OSError:
            continue
        pid, alive = master(d)
        try:
            with open(d + "/haproxy.cfg", "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            digest = None
        print(json.dumps({"dir": d, "owner": owner, "pid": pid, "alive": alive,
                          "digest": digest}))
elif op == "stop":
    d = args[0]
    pid, alive = master(d)
    was_running = alive
    for sig, wait in ((signal.SIGUSR1, float(args[1])), (signal.SIGTERM, 5.0)):
        if not alive:
            break
        try:
            os.kill(pid, sig)
        except OSError:
            pass
        deadline = time.time() + wait
        while time.time() < deadline and master(d)[1]:
            time.sleep(0.05)
        alive = master(d)[1]
    for leftover in ours(d):
        try:
            os.kill(leftover, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.time() + 5.0
    while time.time() < deadline and ours(d):
        time.sleep(0.05)
    print(json.dumps({"pid": pid, "was_running": was_running, "left": ours(d)}))
'''


def _helper(*args: object) -> str:
    return "python3 -c " + " ".join(shlex.quote(str(arg)) for arg in (_HELPER, *args))


# ---- desired attributes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The desired attributes, checked, with defaults applied (``attributes`` as given)."""

    attributes: dict[str, Any]
    target: Mapping[str, Any] | None
    name: str
    node_dir: str
    bind_address: str
    listen_port: int
    backends: tuple[dict[str, Any], ...]
    install: bool
    health: dict[str, Any]


def _file(name: str) -> property:
    return property(lambda self: posixpath.join(self.dir, name))


@dataclass(frozen=True)
class Layout:
    """The paths of one load balancer on its machine: ``<node_dir>/haproxy/<name>/...``."""

    dir: str

    @classmethod
    def of(cls, node_dir: str, name: str) -> "Layout":
        return cls(posixpath.join(node_dir, "haproxy", name))

    cfg = _file("haproxy.cfg")
    new = _file("haproxy.cfg.new")
    prev = _file("haproxy.cfg.prev")
    pid = _file("haproxy.pid")
    master = _file("master.sock")
    stats = _file("stats.sock")
    log = _file("haproxy.log")
    owner = _file("owner.json")
    state = _file("server-state")


def _port(address: str, what: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ProviderError(f"{what} must be a port number, not {value!r}", address=address)
    try:
        port = int(value)
    except ValueError:
        raise ProviderError(f"{what} must be a port number, not {value!r}",
                            address=address) from None
    if not low <= port <= 65535:
        raise ProviderError(f"{what} {port} is not a port number", address=address)
    return port


def placement(address: str, attributes: Mapping[str, Any]) -> tuple[Any, str, str]:
    """``target``, ``name`` and ``node_dir``: where the load balancer lives (force_new)."""
    target = attributes.get("target") or None
    if target is not None and not isinstance(target, Mapping):
        raise ProviderError("target must be null (this machine) or an SSH target mapping",
                            address=address)
    name = attributes.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProviderError(f"name {name!r} must be 1-40 letters, digits, '_', '.' or '-' "
                            "(it names a directory)", address=address)
    node_dir = attributes.get("node_dir")
    if (not isinstance(node_dir, str) or not node_dir.startswith("/")
            or ".." in node_dir.split("/") or not _NO_SPACE.match(node_dir)):
        raise ProviderError(f"node_dir {node_dir!r} must be an absolute path without '..' or "
                            "spaces", address=address)
    return target, name, posixpath.normpath(node_dir)


def check_desired(address: str, desired: Mapping[str, Any]) -> Config:
    """Validate ``desired``; raise :class:`ProviderError` naming the attribute at fault."""
    unknown = sorted(set(desired) - set(DESIRED) - set(COMPUTED))
    if unknown:
        raise ProviderError(f"unknown attributes: {', '.join(unknown)}", address=address,
                            hint="haproxy_lb takes: " + ", ".join(DESIRED))
    missing = [key for key in REQUIRED if desired.get(key) in (None, "")]
    if missing:
        raise ProviderError(f"missing attributes: {', '.join(missing)}", address=address)
    target, name, node_dir = placement(address, desired)
    bind_address = desired.get("bind_address")
    bind_address = "0.0.0.0" if bind_address is None else str(bind_address)
    if bind_address and not _NO_SPACE.match(bind_address):
        raise ProviderError(f"bind_address {bind_address!r} is not an address", address=address)
    backends = desired["backends"]
    if not isinstance(backends, (list, tuple)):
        raise ProviderError("backends must be a list of {name, address, port}", address=address)
    checked: dict[str, dict[str, Any]] = {}
    for index, backend in enumerate(backends):
        where = f"backends[{index}]"
        if not isinstance(backend, Mapping) or set(backend) != {"name", "address", "port"}:
            raise ProviderError(f"{where} must have exactly name, address and port",
                                address=address)
        server = str(backend["name"])
        if not _SERVER_NAME.match(server):
            raise ProviderError(f"{where}.name {server!r}: use letters, digits, '_', '.', ':' "
                                "or '-'", address=address)
        if server in checked:
            raise ProviderError(f"two backends are named {server!r}", address=address)
        host = str(backend["address"])
        if not _NO_SPACE.match(host):
            raise ProviderError(f"{where}.address {host!r} is not an address", address=address)
        # Port 0 is left to HAProxy, which refuses it with its own message.
        checked[server] = {"name": server, "address": host,
                           "port": _port(address, f"{where}.port", backend["port"], low=0)}
    health = dict(DEFAULT_HEALTH)
    overrides = desired.get("health") or {}
    if not isinstance(overrides, Mapping) or set(overrides) - set(DEFAULT_HEALTH):
        raise ProviderError("health takes path, inter_ms, fall and rise", address=address)
    health.update(overrides)
    if not isinstance(health["path"], str) or not re.match(r"^/[^\s]*$", health["path"]):
        raise ProviderError(f"health.path {health['path']!r} must start with '/' and hold no "
                            "spaces", address=address)
    for key, low, high in (("inter_ms", 100, 60_000), ("fall", 1, 100), ("rise", 1, 100)):
        value = health[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ProviderError(f"health.{key} must be an integer in {low}..{high}",
                                address=address)
    install = desired.get("install")
    if install is not None and not isinstance(install, bool):
        raise ProviderError("install must be true or false", address=address)
    return Config(
        attributes={key: desired[key] for key in DESIRED if key in desired},
        target=target, name=name, node_dir=node_dir, bind_address=bind_address,
        listen_port=_port(address, "listen_port", desired["listen_port"]),
        backends=tuple(checked[server] for server in sorted(checked)),
        install=bool(install), health=health,
    )


def render(address: str, config: Config) -> str:
    """The haproxy.cfg of ``config``; equal configs give equal text (backends sorted)."""
    import jinja2

    from provisioner.data import data_path

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_path("templates"))),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(TEMPLATE).render(
        address=address, dir=Layout.of(config.node_dir, config.name).dir,
        bind_address=config.bind_address, listen_port=config.listen_port, health=config.health,
        backends=config.backends)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def url_of(config: Config) -> str:
    host = config.bind_address
    if host in WILDCARDS:
        host = (config.target or {}).get("address") or WILDCARDS[host]
    return f"http://[{host}]:{config.listen_port}" if ":" in host else \
        f"http://{host}:{config.listen_port}"


def _probe_host(config: Config) -> str:
    return WILDCARDS.get(config.bind_address, config.bind_address)


def _target_key(target: Any) -> str:
    return json.dumps(target or None, sort_keys=True, default=str)


class HAProxyLB(ResourceType):
    """One HAProxy on one machine. See :mod:`provisioner.providers.base` for the contract and
    this module's docstring for the attributes and the files it keeps."""

    type_name = "haproxy_lb"
    force_new = frozenset({"target", "name", "node_dir"})
    computed = frozenset(COMPUTED)
    ignore_drift = frozenset({"install"})
    # Where HAProxy may be, tried in order with `command -v` (/usr/sbin is not on a plain SSH
    # user's PATH on Debian).
    haproxy_candidates: tuple[str, ...] = ("haproxy", "/usr/sbin/haproxy",
                                           "/usr/local/sbin/haproxy")

    # ---- contract -----------------------------------------------------------------------------

    def list(self, scope: ListScope) -> list[LiveResource]:
        groups: dict[str, tuple[Any, set[str]]] = {}
        for known in scope.known:
            try:  # (the name does not matter here: every directory under node_dir is read)
                target, _, node_dir = placement(known.address, {**known.attributes, "name": "x"})
            except ProviderError:
                continue  # unresolved references (planned, not made yet): nothing to look at
            if "${" in _target_key(target) + node_dir:
                continue
            groups.setdefault(_target_key(target), (target, set()))[1].add(node_dir)
        found: dict[str, LiveResource] = {}
        for target, node_dirs in groups.values():
            runner = self._runner(target)
            dirs = " ".join(shlex.quote(node_dir) + "/haproxy/*/"
                            for node_dir in sorted(node_dirs))
            # One command per machine: every marker under every node_dir, with liveness.
            result = runner.run("command -v python3 >/dev/null || exit 0; "
                                f"{_helper('inventory')} {dirs}", timeout=60)
            for entry in readers.parse_inventory(result.stdout):
                record = entry.owner
                if not entry.alive or not record or record.get("lineage") != scope.owner.lineage:
                    continue
                try:
                    config = check_desired(record.get("address", ""), record["attributes"])
                except (ProviderError, KeyError, TypeError):
                    continue  # a marker this version cannot read is not one of ours
                live = self._live(runner, config, record, entry.pid, entry.digest)
                found.setdefault(live.address, live)
        return list(found.values())

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        config = check_desired(address, desired)
        runner = self._runner(config.target)
        layout = self._layout(address, config)
        text = render(address, config)
        entry = self._entry(runner, layout)
        if entry is not None and entry.owner is not None:
            self._check_owner(address, layout, entry.owner)
            if entry.alive and entry.owner.get("token") == token:
                self.ctx.progress(address, "HAProxy already running (same token): adopted")
                return self._live(runner, config, entry.owner, entry.pid, entry.digest)
            if entry.alive:
                raise ProviderError(
                    f"another HAProxy of {address} already runs in {layout.dir}",
                    address=address,
                    hint="run `provisioner plan` again: the state does not record it")
            self.ctx.progress(address, f"removing what an interrupted create left in {layout.dir}")
            self._stop_and_remove(runner, layout, address)
        haproxy = self._haproxy(runner, config, address)
        record = {"address": address, "token": token, "cluster": self.ctx.owner.cluster,
                  "lineage": self.ctx.owner.lineage, "attributes": config.attributes,
                  "created_at": time.time()}
        self._put(runner, layout.owner, _json(record), address)  # before anything starts
        try:
            self._stage(runner, haproxy, layout, text, address)
            runner.run(f"mv -f {shlex.quote(layout.new)} {shlex.quote(layout.cfg)}")
            pid = self._start(runner, haproxy, layout, config, address)
        except BaseException:
            # Leave nothing behind; the error carries HAProxy's own message.
            self._stop_and_remove(runner, layout, address, quiet=True)
            raise
        return self._live(runner, config, record, pid, digest(text))

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        config = check_desired(address, desired)
        runner = self._runner(config.target)
        layout = self._layout(address, config)
        entry = self._entry(runner, layout)
        if entry is None or entry.owner is None or not entry.alive:
            raise ProviderError(f"HAProxy of {address} is not running in {layout.dir}",
                                address=address,
                                hint="run `provisioner plan` again: refresh sees it gone and "
                                     "the plan creates it anew")
        self._check_owner(address, layout, entry.owner)
        text = render(address, config)
        record = {**entry.owner, "attributes": config.attributes}
        if digest(text) == entry.digest:
            self.ctx.progress(address, "config unchanged: no reload")
        else:
            haproxy = self._haproxy(runner, config, address)
            self._stage(runner, haproxy, layout, text, address)
            self._reload(runner, layout, config, address)
        if record != entry.owner:
            self._put(runner, layout.owner, _json(record), address)
        return self._live(runner, config, record, entry.pid, digest(text))

    def delete(self, address: str, prior: LiveResource) -> None:
        target, name, node_dir = placement(address, prior.attributes)
        runner = self._runner(target)
        layout = Layout.of(node_dir, name)
        entry = self._entry(runner, layout)
        if entry is None or entry.owner is None:
            return  # gone; a directory without our marker is not ours to remove
        self._check_owner(address, layout, entry.owner)
        self._stop_and_remove(runner, layout, address)

    def status(self, record: LiveResource) -> dict[str, Any]:
        """The backends with their health as HAProxy sees them (``show stat``)."""
        facts: dict[str, Any] = {"url": record.attributes.get("url"),
                                 "master_pid": record.attributes.get("master_pid")}
        try:
            target, name, node_dir = placement(record.address, record.attributes)
            layout = Layout.of(node_dir, name)
            output = self._runner(target).run(_helper("cli", layout.stats, "show stat"),
                                              timeout=30).stdout
            facts["backends"] = [server.as_dict() for server in readers.parse_show_stat(output)]
        except (ProviderError, ValueError) as error:
            facts["error"] = str(error)
        return facts

    # ---- steps --------------------------------------------------------------------------------

    def _runner(self, target: Mapping[str, Any] | None) -> Runner:
        from provisioner.remote.connect import runner_for

        return runner_for(target)

    def _layout(self, address: str, config: Config) -> Layout:
        layout = Layout.of(config.node_dir, config.name)
        if len(layout.master) > SOCKET_PATH_LIMIT:
            raise ProviderError(
                f"{layout.master} is too long for a unix socket ({len(layout.master)} > "
                f"{SOCKET_PATH_LIMIT} characters)", address=address,
                hint="use a shorter node_dir or name")
        return layout

    def _entry(self, runner: Runner, layout: Layout) -> readers.DirEntry | None:
        entries = readers.parse_inventory(runner.run(_helper("inventory", layout.dir),
                                                     timeout=60).stdout)
        return entries[0] if entries else None

    def _check_owner(self, address: str, layout: Layout, record: Mapping[str, Any]) -> None:
        if record.get("lineage") != self.ctx.owner.lineage:
            raise ProviderError(
                f"{layout.dir} belongs to another state (lineage {record.get('lineage')})",
                address=address, hint="give this load balancer another name or node_dir")
        if record.get("address") != address:
            raise ProviderError(f"{layout.dir} belongs to {record.get('address')}",
                                address=address, hint="give each haproxy_lb its own name")

    def _live(self, runner: Runner, config: Config, record: Mapping[str, Any],
              pid: int | None, config_digest: str | None) -> LiveResource:
        attributes = {**config.attributes, "url": url_of(config), "config_digest": config_digest,
                      "master_pid": pid}
        layout = Layout.of(config.node_dir, config.name)
        return LiveResource(record["address"], f"{runner.host}:{layout.dir}", attributes,
                            record.get("token"))

    def _put(self, runner: Runner, path: str, data: bytes, address: str) -> None:
        try:
            runner.put(path, data)
        except OSError as error:
            raise ProviderError(f"cannot write {path} on {runner.host}: {error}",
                                address=address,
                                hint="node_dir must be writable by the user provisioner acts "
                                     "as there") from None

    def _haproxy(self, runner: Runner, config: Config, address: str) -> str:
        """The path of HAProxy on the machine, installed first when allowed."""
        tools = self._tools(runner)
        missing = [tool for tool in ("haproxy", "python3") if tool not in tools]
        if missing and not config.install:
            raise ProviderError(
                f"{' and '.join(missing)} not installed on {runner.host}", address=address,
                hint=f"set install: true on this load balancer, or run there: sudo apt-get "
                     f"install -y {' '.join(missing)}")
        if missing:
            self.ctx.progress(address, f"installing {' '.join(missing)} with apt-get")
            runner.run(_install_script(missing), timeout=900)
            tools = self._tools(runner)
            if "haproxy" not in tools:
                raise ProviderError(f"apt-get installed haproxy on {runner.host} but it is not "
                                    f"at any of {', '.join(self.haproxy_candidates)}",
                                    address=address)
        return tools["haproxy"]

    def _tools(self, runner: Runner) -> dict[str, str]:
        candidates = " ".join(shlex.quote(candidate) for candidate in self.haproxy_candidates)
        output = runner.run(
            f'for c in {candidates}; do p=$(command -v "$c") && [ -x "$p" ] && '
            'echo "haproxy $p" && break; done; p=$(command -v python3) && echo "python3 $p"; true',
            timeout=30).stdout
        return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)

    def _stage(self, runner: Runner, haproxy: str, layout: Layout, text: str,
               address: str) -> None:
        """Write ``haproxy.cfg.new`` and have HAProxy check it; nothing running changes."""
        self._put(runner, layout.new, text.encode(), address)
        check = runner.run(f"{shlex.quote(haproxy)} -c -f {shlex.quote(layout.new)}",
                           check=False, timeout=60)
        if check.exit_code != 0:
            runner.run(f"rm -f {shlex.quote(layout.new)}", check=False)
            found = readers.alerts(check.stdout + check.stderr) or \
                tuple((check.stdout + check.stderr).strip().splitlines()[-5:])
            raise ProviderError("HAProxy refuses the new config (nothing running was changed):"
                                "\n    " + "\n    ".join(found), address=address)

    def _start(self, runner: Runner, haproxy: str, layout: Layout, config: Config,
               address: str) -> int:
        q = shlex.quote
        self.ctx.progress(address, f"starting HAProxy on {config.bind_address}:"
                                   f"{config.listen_port}")
        # Foreground master-worker in a session of its own (see the module docstring); `$!` is
        # the master itself, as setsid execs HAProxy without forking in a background job.
        # Without `maxconn`, HAProxy sizes itself from the fd limit (strict-limits makes a
        # larger maxconn than the limit allows fatal): raise the soft limit towards the hard one,
        # up to 65536 (about 32k connections), or a 1024 default would cap it near 500.
        started = runner.run(
            'h=$(ulimit -Hn); { [ "$h" = unlimited ] || [ "$h" -gt 65536 ]; } && h=65536; '
            's=$(ulimit -n); [ "$s" != unlimited ] && [ "$s" -lt "$h" ] && ulimit -n "$h"; '
            f"cd {q(layout.dir)} && rm -f {q(layout.pid)} && {{ setsid {q(haproxy)} -W "
            f"-S {q(layout.master)},mode,600 -p {q(layout.pid)} -f {q(layout.cfg)} "
            f"</dev/null >>{q(layout.log)} 2>&1 & }} && echo $!", timeout=30)
        pid = int(started.stdout.split()[-1])
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            probe = self._probe(runner, layout, config, 0, pid)
            proc = _proc(probe)
            if probe["alive"] and proc is not None and proc.workers and probe["accepts"]:
                self.ctx.progress(address, f"HAProxy serving (master {proc.master_pid})")
                return proc.master_pid
            if not probe["running"] or time.monotonic() > deadline:
                why = ("exited" if not probe["running"] else
                       f"did not serve in {START_TIMEOUT_S:g}s")
                lines = readers.alerts(probe["log"]) or \
                    tuple(probe["log"].strip().splitlines()[-5:])
                raise ProviderError(f"HAProxy {why}:\n    " + "\n    ".join(lines),
                                    address=address)
            time.sleep(POLL_S)

    def _reload(self, runner: Runner, layout: Layout, config: Config, address: str) -> None:
        """Swap the checked config in and reload; on any failure put the old file back (the
        old worker keeps serving it: HAProxy's master keeps it when the new one fails) and
        raise."""
        q = shlex.quote
        before = _proc(self._probe(runner, layout, config, 0))
        if before is None:
            raise ProviderError(f"HAProxy's master CLI ({layout.master}) does not answer",
                                address=address, hint=f"see {layout.log} on {runner.host}")
        self.ctx.progress(address, "reloading HAProxy with the new config")
        runner.run(f"cp -f {q(layout.cfg)} {q(layout.prev)} && "
                   f"mv -f {q(layout.new)} {q(layout.cfg)}", timeout=30)
        try:
            offset = self._send_reload(runner, layout, config, address)
            self._await_reload(runner, layout, config, address, offset, before)
        except BaseException:
            runner.run(f"mv -f {q(layout.prev)} {q(layout.cfg)}", check=False)
            raise
        runner.run(f"rm -f {q(layout.prev)}", check=False)

    def _send_reload(self, runner: Runner, layout: Layout, config: Config, address: str) -> int:
        """Save the health states the new worker starts from (see server-state-file in the
        template), then ask the master to reload; return where the master's log stood."""
        q = shlex.quote
        dump = runner.run(_helper("cli", layout.stats, "show servers state"), check=False)
        carried = readers.carry_server_states(dump.stdout, config.backends) \
            if dump.exit_code == 0 else ""
        if carried:
            self._put(runner, layout.state, carried.encode(), address)
        else:
            runner.run(f"rm -f {q(layout.state)}")
        sent = runner.run(f"wc -c <{q(layout.log)} 2>/dev/null || echo 0; "
                          f"{_helper('reload', layout.master)}", timeout=60)
        return int(sent.stdout.split()[0])

    def _await_reload(self, runner: Runner, layout: Layout, config: Config, address: str,
                      offset: int, before: readers.ProcTable) -> None:
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while True:
            probe = self._probe(runner, layout, config, offset, before.master_pid)
            outcome = readers.load_outcome(probe["log"])
            proc = _proc(probe)
            if outcome.ok and proc is not None and probe["accepts"] and \
                    set(proc.worker_pids) - set(before.worker_pids):
                self.ctx.progress(address, f"reloaded: worker {proc.worker_pids} serves, "
                                           f"{len(proc.old_workers)} old worker(s) finishing")
                return
            if outcome.ok is False or not probe["running"] or time.monotonic() > deadline:
                why = ("\n    ".join(outcome.alerts) if outcome.alerts else
                       "the master exited" if not probe["running"] else
                       f"no new worker after {RELOAD_TIMEOUT_S:g}s")
                raise ProviderError(
                    "HAProxy refused the new config at reload; the previous config still "
                    f"serves:\n    {why}", address=address,
                    hint=f"see {layout.log} on {runner.host}")
            time.sleep(POLL_S)

    def _probe(self, runner: Runner, layout: Layout, config: Config, offset: int,
               pid: int | None = None) -> dict[str, Any]:
        args = [layout.dir, _probe_host(config), config.listen_port, offset]
        result = runner.run(_helper("probe", *args, *([pid] if pid else [])), timeout=30)
        return json.loads(result.stdout)

    def _stop_and_remove(self, runner: Runner, layout: Layout, address: str,
                         quiet: bool = False) -> None:
        """Soft-stop our master (SIGUSR1: workers finish their requests), then SIGTERM, then
        SIGKILL whatever of ours is left; remove the directory."""
        try:
            stopped = json.loads(runner.run(_helper("stop", layout.dir, SOFT_STOP_S),
                                            timeout=SOFT_STOP_S + 30).stdout)
            if stopped["was_running"]:
                self.ctx.progress(address, f"stopped HAProxy (master {stopped['pid']})")
            if stopped["left"]:
                raise ProviderError(
                    f"HAProxy processes {stopped['left']} of {layout.dir} survived SIGKILL",
                    address=address,
                    hint=f"kill them on {runner.host}, then remove {layout.dir}")
            runner.run(f"rm -rf -- {shlex.quote(layout.dir)}", timeout=60)
        except ProviderError:
            if not quiet:
                raise


def _proc(probe: Mapping[str, Any]) -> readers.ProcTable | None:
    try:
        return readers.parse_show_proc(probe["proc"]) if probe.get("proc") else None
    except ValueError:
        return None


def _json(record: Mapping[str, Any]) -> bytes:
    # One line: the inventory reads owner.json whole, and equal records give equal bytes.
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def _install_script(packages: list[str]) -> str:
    names = " ".join(shlex.quote(package) for package in packages)
    apt = 'env DEBIAN_FRONTEND=noninteractive apt-get'
    return (
        'SUDO=; [ "$(id -u)" = 0 ] || SUDO="sudo -n"; '
        f'$SUDO {apt} install -y {names} || '
        f'{{ $SUDO {apt} update && $SUDO {apt} install -y {names}; }} || exit 1; '
        # Debian starts the packaged service (/etc/haproxy/haproxy.cfg) on install: it must not
        # run beside ours.
        'if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then '
        '$SUDO systemctl disable --now haproxy.service; '
        'elif command -v service >/dev/null; then $SUDO service haproxy stop; '
        'elif [ -x /etc/init.d/haproxy ]; then $SUDO /etc/init.d/haproxy stop; fi; true')

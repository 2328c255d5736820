"""The :class:`Harness`: hosts on this machine that behave like VMs (see the package docstring).

A host is a network namespace (``netns.py``) plus a long-running init (``hostinit.py``) in its
own PID, mount and UTS namespaces, running a real sshd (``sshd.py``). Its private directories
are per-host directories under the harness root, bind-mounted inside the host only::

    /var/lib/<prefix>-harness/
        harness.json                 what is up (Record): read by down/kill/info of any process
        id_ed25519[.pub], authorized_keys, known_hosts, etc_hosts, resolv.conf
        hosts/<name>/                host key, sshd_config, init.json, hostname, console.log
        hosts/<name>/fs/tmp, fs/run, fs/var_lib_provisioner     the host's private dirs

Everything else of this machine's filesystem is shared, as on VMs made from one image.

Every public method that changes hosts takes a lock (``flock`` on the root directory), so a CLI
``down`` cannot interleave with a test's ``restart``.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from tests.harness import netns, procs, sshd
from tests.harness.model import HarnessError, HarnessInfo, HostInfo, Record

DEFAULT_PRIVATE_DIRS = ("/tmp", "/run", "/var/lib/provisioner")
HOSTINIT = Path(__file__).with_name("hostinit.py")
_FIRST_OCTET = 10  # host i gets <subnet>.<10+i>; .1 is this machine's end of the bridge
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
_PREFIX = re.compile(r"[a-z][a-z0-9]{0,9}")
_TOOLS = ("ip", "unshare", "nsenter", "mount", "ssh-keygen")
_MADE_BY = "user.test-harness-mountpoint"  # xattr on mount points the harness created


class Harness:
    """Hosts that behave like VMs. ``up`` and ``down`` are idempotent; see the package docs."""

    def __init__(self, prefix: str = "prv", subnet: str = "10.237.0", *,
                 root: str | Path | None = None,
                 private_dirs: Sequence[str] = DEFAULT_PRIVATE_DIRS,
                 ready_timeout: float = 15.0, sshd_path: str = sshd.SSHD,
                 session_path: str | None = None) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise HarnessError(f"prefix {prefix!r}: use 1-10 lowercase letters/digits "
                               "(it names links, which are limited to 15 characters)")
        self.prefix, self.subnet = prefix, subnet
        self.root = Path(root or f"/var/lib/{prefix}-harness")
        self.private_dirs = _check_private_dirs(private_dirs, self.root)
        self.ready_timeout = ready_timeout
        self.sshd_path = sshd_path
        # The PATH of SSH sessions and of the init: this Python's bin dir first (see sshd.py).
        self.session_path = session_path or f"{Path(sys.executable).parent}:{sshd.DEFAULT_PATH}"
        network = ipaddress.ip_network(f"{subnet}.0/24")  # raises on a malformed subnet
        if not network.is_private:
            raise HarnessError(f"subnet {network} is not private; use e.g. 10.237.0")

    # ---- public API -------------------------------------------------------------------------

    def up(self, names: Sequence[str]) -> HarnessInfo:
        """Make exactly the hosts ``names`` (host i at <subnet>.<10+i>) and wait until each sshd
        accepts TCP. Healthy hosts that already match are kept; anything else of this prefix
        (other hosts, leftovers of a crashed run) is removed. On failure everything is removed
        and the error names the host."""
        names = _check_names(names)
        with self._locked():
            try:
                return self._up(names)
            except BaseException:
                self._down(check=False)  # a half-made harness is worse than none
                raise

    def down(self) -> None:
        """Remove every host, namespace, link, process and file of this prefix. Idempotent;
        works from any process and after a crash (everything is found by name)."""
        with self._locked():
            self._down(check=True)

    def kill(self, name: str, *, unplug: bool = False) -> None:
        """Lose the host: SIGKILL its init, so everything on it dies at once. Its address then
        refuses connections; with ``unplug=True`` its cable is pulled too, so connections time
        out instead, as with a VM that lost power."""
        with self._locked():
            address = self._address(name)
            procs.stop(self.prefix, {name})
            if unplug:
                netns.set_plugged(self.prefix, address, False)

    def restart(self, name: str, *, fresh_host_key: bool = False) -> HarnessInfo:
        """Bring the host back empty: same name and address, fresh private dirs, sshd running.
        Same host key, unless ``fresh_host_key`` (a rebuilt VM): then known_hosts is rewritten
        and clients holding the old key see a host key mismatch."""
        with self._locked():
            address = self._address(name)
            procs.stop(self.prefix, {name})
            netns.ensure_bridge(self.prefix, self.subnet)
            started = self._start_host(name, address, fresh_host_key=fresh_host_key)
            self._wait_ready({name: address}, {name: started})
            self._write_known_hosts()
            return self.info()

    def exec(self, name: str, command: str | Sequence[str], timeout: float = 60.0, *,
             input: str | None = None, check: bool = False,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``command`` (a shell string, or an argv) inside the host's namespaces as root, with
        text output captured. A background process must redirect its output (``cmd >log 2>&1
        &``), else this waits for it. On timeout the whole command is killed."""
        process = self._popen(name, command, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise HarnessError(f"on host {name}: `{_show(command)}` timed out after "
                               f"{timeout:g}s") from None
        done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        if check and done.returncode:
            raise HarnessError(f"on host {name}: `{_show(command)}` failed with exit code "
                               f"{done.returncode}: {(err or out).strip()[-1000:]}")
        return done

    def spawn(self, name: str, command: str | Sequence[str], *, log: str | Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``command`` in the host and return at once; its output goes to ``log`` (a path
        on this machine) or nowhere. The process dies with the host; the caller owns the
        returned Popen (``wait()`` it after a kill, or stop it with ``stop_spawned``)."""
        output = open(log, "ab") if log else subprocess.DEVNULL
        try:
            return self._popen(name, command, env=env, stdin=subprocess.DEVNULL,
                               stdout=output, stderr=subprocess.STDOUT)
        finally:
            if log:
                output.close()

    def info(self) -> HarnessInfo:
        record = self._record()
        if record is None or not record.hosts:
            raise HarnessError(f"no harness {self.prefix!r} is up ({self.root / 'harness.json'} "
                               "is missing); run `python -m tests.harness up N`")
        hosts = tuple(HostInfo(name, address, self._host_key(name))
                      for name, address in record.hosts.items())
        return HarnessInfo(hosts=hosts, user="root", key_file=str(self.root / "id_ed25519"),
                           known_hosts=str(self.root / "known_hosts"), root=str(self.root),
                           gateway=netns.gateway(self.subnet), harness=self)

    def init_pid(self, name: str) -> int | None:
        """Pid (on this machine) of the host's init, None when the host is down."""
        return procs.init_pid(self.prefix, name)

    def leftovers(self) -> dict[str, list]:
        """What of this prefix exists on the machine right now (empty lists after ``down``)."""
        return {"netns": netns.list_netns(self.prefix), "links": netns.list_links(self.prefix),
                "processes": [p.pid for p in procs.scan(self.prefix)],
                "mounts": _machine_mounts_under(self.root)}

    # ---- up / down --------------------------------------------------------------------------

    def _up(self, names: list[str]) -> HarnessInfo:
        self._check_machine()
        sshd.ensure_installed(self.sshd_path)
        wanted = {name: f"{self.subnet}.{_FIRST_OCTET + i}" for i, name in enumerate(names)}
        record = self._record() or Record(self.prefix, self.subnet)
        keep = {name: address for name, address in wanted.items()
                if record.subnet == self.subnet and record.hosts.get(name) == address
                and self._healthy(name, address)}
        # Remove first what will not stay (stale hosts, leftovers of a crashed run), so that no
        # name or address is held twice.
        procs.stop(self.prefix, keep=set(keep))
        netns.remove_all(self.prefix, keep_hosts=keep)
        self._remove_host_dirs(keep=set(keep))
        # Record before creating anything: a crash from here on is cleaned up by `down`.
        record = Record(self.prefix, self.subnet, hosts=wanted,
                        created_dirs=self._make_mountpoints(record.created_dirs))
        record.write(self._record_path)
        sshd.ensure_client_key(self.root)
        self._write_etc_hosts(wanted)
        netns.ensure_bridge(self.prefix, self.subnet)
        starting = {name: address for name, address in wanted.items() if name not in keep}
        started = {name: self._start_host(name, address) for name, address in starting.items()}
        self._wait_ready(starting, started)
        self._write_known_hosts()
        return self.info()

    def _down(self, *, check: bool) -> None:
        record = self._record()
        procs.stop(self.prefix)
        netns.remove_all(self.prefix)
        made = {path for path in self.private_dirs if _made_by(path, self.prefix)}
        for path in made.union(record.created_dirs if record else []):
            try:
                os.rmdir(path)  # only if still empty: never remove what someone else wrote
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        left = {kind: items for kind, items in self.leftovers().items() if items}
        if check and left:
            raise HarnessError(f"down left {json.dumps(left)}; remove by hand: `ip netns del "
                               f"<name>`, `ip link del <name>`, `kill -9 <pid>`")

    # ---- one host ---------------------------------------------------------------------------

    def _start_host(self, name: str, address: str, *,
                    fresh_host_key: bool = False) -> subprocess.Popen:
        """Start the host's init; returns its waiting ``unshare`` parent (exits with the host)."""
        host_dir = self.root / "hosts" / name
        binds = self._fresh_private_dirs(host_dir)
        (host_dir / "hostname").write_text(name + "\n")
        sshd.ensure_host_key(host_dir, fresh=fresh_host_key)
        config = sshd.write_config(host_dir, address=address, root=self.root,
                                   session_path=self.session_path)
        env = {"PATH": self.session_path, "LANG": "C.UTF-8", "HOME": "/root"}
        init_config = host_dir / "init.json"
        init_config.write_text(json.dumps({
            "hostname": name,
            "binds": binds + [[str(self.root / "etc_hosts"), "/etc/hosts"],
                              [str(self.root / "resolv.conf"), "/etc/resolv.conf"],
                              [str(host_dir / "hostname"), "/etc/hostname"]],
            # sshd's privilege separation dir, and /run/lock which tools expect in a fresh /run.
            "run_dirs": [["/run/sshd", 0o755], ["/run/lock", 0o1777]],
            "sshd": [self.sshd_path, "-D", "-e", "-f", str(config)],
            "env": env,
        }, indent=2))
        netns.ensure_host_network(self.prefix, self.subnet, name, address)
        argv = ["ip", "netns", "exec", netns.netns_name(self.prefix, name),
                shutil.which("unshare") or "unshare", "--pid", "--fork", "--mount", "--uts",
                "--mount-proc", "--propagation", "private",
                sys.executable, "-I", "-S", str(HOSTINIT), procs.marker(self.prefix, name),
                str(init_config)]
        with open(host_dir / "console.log", "ab") as console:
            # A session of its own: the caller's Ctrl-C or closed terminal must not reach hosts.
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                       stderr=subprocess.STDOUT, env=env, cwd="/",
                                       start_new_session=True)
        procs.register(process)
        return process

    def _fresh_private_dirs(self, host_dir: Path) -> list[list[str]]:
        """Empty per-host directories for the private paths: a restarted host starts empty."""
        binds = []
        for path in self.private_dirs:
            source = host_dir / "fs" / path.strip("/").replace("/", "_")
            shutil.rmtree(source, ignore_errors=True)
            source.mkdir(parents=True)
            # The machine's mode, so /tmp stays sticky and world-writable inside the host.
            source.chmod(os.stat(path).st_mode & 0o7777 if os.path.isdir(path) else 0o755)
            binds.append([str(source), path])
        return binds

    def _healthy(self, name: str, address: str) -> bool:
        return (netns.netns_name(self.prefix, name) in netns.list_netns(self.prefix)
                and self.init_pid(name) is not None and sshd.accepts(address))

    def _wait_ready(self, hosts: dict[str, str], started: dict[str, subprocess.Popen]) -> None:
        # Liveness from our own child (cheap to poll), not from a scan of /proc per poll.
        sshd.wait_ready(hosts, alive=lambda name: started[name].poll() is None,
                        console=self._console_tail, timeout=self.ready_timeout)

    def _console_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.root / "hosts" / name / "console.log").read_text(errors="replace")
        except OSError:
            return "    (no console.log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def _popen(self, name: str, command: str | Sequence[str], **kwargs) -> subprocess.Popen:
        pid = self.init_pid(name)
        if pid is None:
            raise HarnessError(f"host {name} is not running (killed, or not up); "
                               f"`restart({name!r})` brings it back")
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        # --pid makes nsenter fork: the command is a process of the host and dies with it.
        return subprocess.Popen(["nsenter", f"--target={pid}", "--net", "--pid", "--mount",
                                 "--uts", "--", *argv], text=True, start_new_session=True,
                                **kwargs)

    # ---- files ------------------------------------------------------------------------------

    @property
    def _record_path(self) -> Path:
        return self.root / "harness.json"

    def _record(self) -> Record | None:
        return Record.read(self._record_path)

    def _address(self, name: str) -> str:
        record = self._record()
        if record is None or name not in record.hosts:
            known = ", ".join(record.hosts) if record else "none; the harness is down"
            raise HarnessError(f"no host {name!r} in harness {self.prefix!r} (hosts: {known})")
        return record.hosts[name]

    def _host_key(self, name: str) -> str:
        return sshd.public_key(self.root / "hosts" / name / "ssh_host_ed25519_key")

    def _write_known_hosts(self) -> None:
        record = self._record()
        sshd.write_known_hosts(self.root / "known_hosts",
                               [(address, self._host_key(name))
                                for name, address in (record.hosts.items() if record else [])])

    def _write_etc_hosts(self, hosts: dict[str, str]) -> None:
        # Hosts resolve each other's names (and their own, which Ray looks up) without DNS; a
        # DNS query would go nowhere (see netns.py) and only time out. Written in place, never
        # replaced: running hosts see it through a bind mount of this very inode.
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback",
                 f"{netns.gateway(self.subnet)} {self.prefix}-gateway"]
        lines += [f"{address} {name}" for name, address in hosts.items()]
        with open(self.root / "etc_hosts", "w") as handle:
            handle.write("\n".join(lines) + "\n")
        # No DNS server on the hosts' network: a name that is not in /etc/hosts (or an IPv6
        # lookup of one that is) must fail at once, not after resolv.conf's 2 x 5 s timeouts.
        # Port 53 on the host's own loopback refuses immediately.
        (self.root / "resolv.conf").write_text(
            "# test harness hosts: no DNS; names come from /etc/hosts\n"
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")

    def _make_mountpoints(self, already: list[str]) -> list[str]:
        """Create missing mount points (e.g. /var/lib/provisioner) on this machine; they are
        shared, so only an empty directory appears, removed by ``down``."""
        created = list(already)
        for path in self.private_dirs:
            if not os.path.exists(path):
                os.makedirs(path)
                created.append(path)
                try:  # also on the dir itself, for a `down` that lost the record
                    os.setxattr(path, _MADE_BY, self.prefix.encode())
                except OSError:
                    pass  # a filesystem without user xattrs: the record alone says it
        return created

    def _remove_host_dirs(self, keep: set[str]) -> None:
        hosts_dir = self.root / "hosts"
        if hosts_dir.is_dir():
            for host_dir in hosts_dir.iterdir():
                if host_dir.name not in keep:
                    shutil.rmtree(host_dir, ignore_errors=True)

    def _check_machine(self) -> None:
        if os.geteuid() != 0:
            raise HarnessError("the harness needs root (network namespaces, mounts, sshd)")
        missing = [tool for tool in _TOOLS if not shutil.which(tool)]
        if missing:
            raise HarnessError(f"missing tools: {', '.join(missing)} (apt-get install -y "
                               "iproute2 util-linux mount openssh-client)")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """flock on the root directory. ``down`` deletes the root, so after waiting we check
        we locked the directory that still exists, not a deleted one."""
        while True:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.root).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield
        finally:
            if not self._record_path.exists():
                # Nothing is up (e.g. `kill` on a harness that is down): leave no empty root.
                shutil.rmtree(self.root, ignore_errors=True)
            os.close(fd)


def stop_spawned(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop a process from :meth:`Harness.spawn` (and whatever it started in the host)."""
    _kill_group(process, timeout)


def _kill_group(process: subprocess.Popen, timeout: float = 5.0) -> None:
    # The command runs in nsenter's process group (a session of its own), inside the host's
    # PID namespace; signalling the group from here reaches it there too.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream:  # not read to the end: a process that left the group may still hold it
            stream.close()


def _check_names(names: Sequence[str]) -> list[str]:
    names = list(names)
    if not names:
        raise HarnessError("up needs at least one host name")
    if len(set(names)) != len(names):
        raise HarnessError(f"host names must be unique: {names}")
    if len(names) > 240:
        raise HarnessError("at most 240 hosts fit in a /24 from .10")
    bad = [name for name in names if not _NAME.fullmatch(name)]
    if bad:
        raise HarnessError(f"bad host names {bad}: use lowercase letters, digits and '-' "
                           "(they become hostnames and namespace names)")
    return names


def _check_private_dirs(paths: Sequence[str], root: Path) -> tuple[str, ...]:
    checked = []
    for path in paths:
        path = os.path.normpath(path)
        if not os.path.isabs(path) or path == "/":
            raise HarnessError(f"private dir {path!r}: must be an absolute path other than /")
        if str(root) == path or str(root).startswith(path + "/"):
            # Mounting over it would hide the harness's own files (keys, sshd_config).
            raise HarnessError(f"private dir {path} would hide the harness root {root}")
        checked.append(path)
    return tuple(checked)


def _made_by(path: str, prefix: str) -> bool:
    try:
        return os.getxattr(path, _MADE_BY) == prefix.encode()
    except OSError:
        return False


def _machine_mounts_under(root: Path) -> list[str]:
    """Mounts of this machine's mount namespace that involve the harness root (there should be
    none: host mounts live only in the hosts' own mount namespaces)."""
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle
                if str(root) in line.split()[3] or str(root) in line.split()[4]]


def _show(command: str | Sequence[str]) -> str:
    text = command if isinstance(command, str) else " ".join(command)
    return text if len(text) <= 120 else text[:117] + "..."

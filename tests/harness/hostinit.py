"""PID 1 of a harness host. Standalone: standard library only, run as
``python -I -S hostinit.py --harness-host=<prefix>:<name> <config.json>``.

``tests/harness/hosts.py`` starts it through
``ip netns exec <netns> unshare --pid --fork --mount --uts --mount-proc --propagation private``,
so it runs in the host's network namespace and in fresh PID, mount and UTS namespaces. It:

1. sets the hostname (the UTS namespace is the host's own);
2. bind-mounts the host's per-host directories over the private paths (/tmp, /run,
   /var/lib/provisioner, ...) and the harness's files over /etc/hosts, /etc/resolv.conf and
   /etc/hostname. The mount namespace is private, so nobody outside sees these mounts; they
   vanish with the host;
3. runs sshd in the foreground and restarts it if it exits, as systemd would on a VM;
4. reaps every orphan, forever: as PID 1 of its namespace it inherits every daemonised process
   of the host (Ray, haproxy) whose parent exits.

As PID 1 of a namespace it ignores every signal it has no handler for, so only SIGKILL from this
machine stops it; the kernel then kills every process of the host at once.

The marker argument is unused here: it is what ``procs.scan`` finds the host's processes by.
"""

import json
import os
import socket
import subprocess
import sys
import time


def log(message):
    # stdout is the host's console.log (see hosts.py): the only place a failing init can talk.
    print(f"[init {socket.gethostname()}] {message}", flush=True)


def mount_private(binds):
    for source, target in binds:
        target = os.path.realpath(target)  # /etc/resolv.conf may be a symlink into /run
        if not os.path.exists(target):  # e.g. that symlink's target, in the now empty /run
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        # --bind of a per-host directory (or file): private because the namespace is.
        subprocess.run(["mount", "--bind", source, target], check=True)


def spawn(argv, env):
    # Inherits stdin (/dev/null) and stdout/stderr (the console) from this init.
    return os.posix_spawn(argv[0], argv, env)


def supervise(argv, env):
    """Keep sshd running and reap every child; never returns."""
    sshd = spawn(argv, env)
    log(f"sshd started (pid {sshd})")
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # nothing to wait for: sshd is between restarts
            pid, status = None, 0
            time.sleep(0.5)
        if pid == sshd or pid is None:
            log(f"sshd exited ({os.waitstatus_to_exitcode(status)}); restarting in 1s")
            time.sleep(1)
            sshd = spawn(argv, env)


def main(argv):
    with open(argv[-1]) as handle:
        config = json.load(handle)
    socket.sethostname(config["hostname"])
    mount_private(config["binds"])
    for path, mode in config["run_dirs"]:
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
    log(f"up: {' '.join(target for _, target in config['binds'])} are private")
    supervise(config["sshd"], config["env"])


if __name__ == "__main__":
    try:
        main(sys.argv)
    except Exception as exc:  # noqa: BLE001 - say why on the console, then die like a bad boot
        log(f"failed: {exc!r}")
        sys.exit(1)

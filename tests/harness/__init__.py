"""Test hosts that behave like VMs, made on this machine from Linux namespaces.

Each host has its own network namespace (an address on a private bridge), PID namespace, mount
namespace (private /tmp, /run, /var/lib/provisioner) and UTS namespace (hostname = host name),
and runs a real OpenSSH server on <address>:22 that accepts the harness's key for root. Losing a
host = SIGKILL of its init (PID 1 of its PID namespace): everything on it dies at once. Needs
root, ``ip``, ``unshare``, ``nsenter`` and openssh-server (installed by ``up`` with apt-get when
missing and running as root).

Python::

    from tests.harness import Harness
    harness = Harness()                       # prefix "prv", bridge prvbr0, subnet 10.237.0
    info = harness.up(["lb", "head", "w1"])   # lb=10.237.0.10, head=.11, w1=.12
    info.address("head"); info.key_file; info.known_hosts; info.ssh_target("head")
    harness.exec("head", "hostname")          # CompletedProcess, run inside the host
    proc = harness.spawn("head", "python3 -m http.server --bind 10.237.0.11 8080")
    harness.kill("head")                      # the VM lost power (unplug=True: also its cable)
    harness.restart("head")                   # back, empty, same address and host key
    harness.restart("head", fresh_host_key=True)   # a rebuilt VM: new host key
    harness.down()                            # nothing left: netns, links, processes, files

pytest (skips when not root or namespaces can't be made; fails instead under CI=true)::

    from tests.harness.fixtures import harness_hosts, harness_factory

    def test_x():
        with harness_hosts(["head", "w1"]) as info:   # always downed at the end
            ...

    def test_y(harness_factory):                      # a fixture: import it into the module
        info = harness_factory(["head"])
        info.harness.kill("head")

CLI (from the repository root)::

    python -m tests.harness up 3 [--names lb,head,w1] [--known-hosts]  # prints JSON
    ssh -i <key_file> -o UserKnownHostsFile=<known_hosts> root@10.237.0.10 hostname
    python -m tests.harness exec head -- ps -ef
    python -m tests.harness kill head [--unplug]
    python -m tests.harness restart head [--fresh-host-key]
    python -m tests.harness info | down

What is private to a host: network (its own loopback too), process table, hostname, /tmp,
/run, /var/lib/provisioner (the list is the ``private_dirs`` option), /etc/hostname,
/etc/hosts (every host's name, so hosts resolve each other and themselves) and
/etc/resolv.conf (no DNS server: other names fail at once instead of timing out).
Everything else of this machine's filesystem is shared (Python, Ray, haproxy, /root, /dev/shm),
as on VMs made from one image. Hosts reach each other and this machine's bridge address
(``info.gateway``), nothing else: IPv4 forwarding is off on the bridge.
"""

from tests.harness.hosts import DEFAULT_PRIVATE_DIRS, Harness, stop_spawned
from tests.harness.model import HarnessError, HarnessInfo, HostInfo

__all__ = ["DEFAULT_PRIVATE_DIRS", "Harness", "HarnessError", "HarnessInfo", "HostInfo",
           "stop_spawned"]

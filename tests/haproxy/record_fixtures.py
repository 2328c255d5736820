"""Record the outputs the haproxy_readers tests read, from the real HAProxy on this machine:
``python -m tests.haproxy.record_fixtures``. Run it again after an HAProxy upgrade and review
the diff. Everything listens on 127.0.0.1; every process it starts is stopped at the end."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

from provisioner.providers import haproxy_readers as readers
from provisioner.providers.base import ProviderContext, Owner
from provisioner.providers.haproxy import HAProxyLB, Layout, _helper
from provisioner.remote.runner import LocalRunner
from tests.haproxy.support import Backend, free_port, get, kill_by_pid_files, wait_for

FIXTURES = Path(__file__).parent / "fixtures"


def cli(path: str, command: str) -> str:
    return LocalRunner().run(_helper("cli", path, command)).stdout


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="hxrec", dir="/tmp"))
    ctx = ProviderContext(Owner("record", str(uuid.uuid4())), root, root)
    lb = HAProxyLB(ctx)
    backends = {name: Backend(name) for name in ("node-a", "node-b", "node-c")}
    FIXTURES.mkdir(exist_ok=True)
    try:
        desired = {"name": "rec", "node_dir": str(root), "bind_address": "127.0.0.1",
                   "listen_port": free_port(),
                   "backends": [backend.spec() for backend in backends.values()]}
        live = lb.create("haproxy_lb.rec", desired, "token-rec")
        layout = Layout.of(str(root), "rec")
        url = live.attributes["url"]
        for _ in range(6):
            get(url)
        # node-b draining (503), node-c gone (refused), caught while node-b has failed one
        # check only ("UP 1/2") and again once both are DOWN.
        backends["node-b"].healthy = False
        backends["node-c"].kill()
        def going_down() -> str | None:
            text = cli(layout.stats, "show stat")
            print([l.split(",")[17] for l in text.splitlines()[1:] if l])
            return text if ",UP 1/2," in text else None

        going = wait_for(going_down, 5, interval=0.02)
        (FIXTURES / "show_stat_going_down.csv").write_text(going)
        wait_for(lambda: all(not s.in_rotation for s in readers.parse_show_stat(
            cli(layout.stats, "show stat")) if s.name != "node-a"), 10)
        (FIXTURES / "show_stat_mixed.csv").write_text(cli(layout.stats, "show stat"))
        (FIXTURES / "show_servers_state.txt").write_text(cli(layout.stats, "show servers state"))
        (FIXTURES / "show_proc_fresh.txt").write_text(cli(layout.master, "show proc"))
        # An old worker still finishing a slow request after a reload.
        slow = threading.Thread(target=get, args=(url, "/slow"), daemon=True)
        slow.start()
        time.sleep(0.3)
        log_offset = Path(layout.log).stat().st_size
        desired["backends"] = [backends["node-a"].spec(), backends["node-b"].spec()]
        live = lb.update("haproxy_lb.rec", live, desired)
        (FIXTURES / "show_proc_old_worker.txt").write_text(cli(layout.master, "show proc"))
        (FIXTURES / "log_reload_success.txt").write_text(
            Path(layout.log).read_bytes()[log_offset:].decode())
        slow.join()
        # A reload HAProxy refuses: the listen port is taken by someone else.
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        log_offset = Path(layout.log).stat().st_size
        try:
            lb.update("haproxy_lb.rec", live, {**desired, "listen_port": holder.getsockname()[1]})
        except Exception:
            pass
        holder.close()
        (FIXTURES / "show_proc_reload_failed.txt").write_text(cli(layout.master, "show proc"))
        (FIXTURES / "log_reload_failure.txt").write_text(
            Path(layout.log).read_bytes()[log_offset:].decode())
        # `haproxy -c` on a config naming a backend that does not resolve.
        bad = Path(layout.dir) / "bad.cfg"
        bad.write_text(Path(layout.cfg).read_text().replace(
            "127.0.0.1:" + str(backends["node-a"].port), "no-such-host.invalid:8000"))
        check = LocalRunner().run(f"/usr/sbin/haproxy -c -f {bad}", check=False)
        (FIXTURES / "check_unresolvable.txt").write_text(
            (check.stdout + check.stderr).replace(str(root), "/var/lib/provisioner"))
        inventory = LocalRunner().run(_helper("inventory") + f" {root}/haproxy/*/").stdout
        (FIXTURES / "inventory.jsonl").write_text(inventory.replace(str(root),
                                                                    "/var/lib/provisioner"))
        lb.delete("haproxy_lb.rec", live)
    finally:
        for backend in backends.values():
            backend.kill()
        kill_by_pid_files(root)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

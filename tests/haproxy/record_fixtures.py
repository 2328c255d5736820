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

from provisioner.errors import ProviderError
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
    try:
        record_all(root)
    finally:
        kill_by_pid_files(root)
        shutil.rmtree(root, ignore_errors=True)


def record_all(root: Path) -> None:
    def record(name: str, text: str) -> None:
        (FIXTURES / name).write_text(text.replace(str(root), "/var/lib/provisioner"))

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

        # Servers not checked yet right after start ("UP 1/2", check INI); then node-b
        # draining (503) and node-c gone (refused), both DOWN.
        def going_down() -> str | None:
            text = cli(layout.stats, "show stat")
            return text if ",UP 1/2," in text else None

        going = wait_for(going_down, 10, interval=0.02)
        assert going, "no server was seen between UP and DOWN"
        record("show_stat_going_down.csv", going)
        backends["node-b"].healthy = False
        backends["node-c"].kill()
        wait_for(lambda: all(not s.in_rotation for s in readers.parse_show_stat(
            cli(layout.stats, "show stat")) if s.name != "node-a"), 10)
        record("show_stat_mixed.csv", cli(layout.stats, "show stat"))
        record("show_servers_state.txt", cli(layout.stats, "show servers state"))
        record("show_proc_fresh.txt", cli(layout.master, "show proc"))

        # An old worker still finishing a slow request after a reload.
        slow = threading.Thread(target=get, args=(url, "/slow"), daemon=True)
        slow.start()
        time.sleep(0.3)
        offset = Path(layout.log).stat().st_size
        desired["backends"] = [backends["node-a"].spec(), backends["node-b"].spec()]
        live = lb.update("haproxy_lb.rec", live, desired)
        record("show_proc_old_worker.txt", cli(layout.master, "show proc"))
        record("log_reload_success.txt", Path(layout.log).read_bytes()[offset:].decode())
        slow.join()

        # A reload HAProxy refuses: the listen port is taken by someone else.
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            offset = Path(layout.log).stat().st_size
            try:
                lb.update("haproxy_lb.rec", live,
                          {**desired, "listen_port": holder.getsockname()[1]})
            except ProviderError:
                pass
        record("show_proc_reload_failed.txt", cli(layout.master, "show proc"))
        record("log_reload_failure.txt", Path(layout.log).read_bytes()[offset:].decode())

        # `haproxy -c` on a config naming a backend that does not resolve.
        bad = Path(layout.dir) / "bad.cfg"
        bad.write_text(Path(layout.cfg).read_text().replace(
            "127.0.0.1:" + str(backends["node-a"].port), "no-such-host.invalid:8000"))
        check = LocalRunner().run(f"/usr/sbin/haproxy -c -f {bad}", check=False)
        record("check_unresolvable.txt", check.stdout + check.stderr)
        bad.unlink()
        record("inventory.jsonl",
               LocalRunner().run(_helper("inventory") + f" {root}/haproxy/*/").stdout)
        lb.delete("haproxy_lb.rec", live)
    finally:
        for backend in backends.values():
            backend.kill()


if __name__ == "__main__":
    main()

"""haproxy_lb against the real HAProxy 2.6 of this machine (no mocks), through LocalRunner.

Backends are tiny HTTP servers standing in for Serve proxies; everything listens on 127.0.0.1.
Each test has its own node_dir; teardown SIGKILLs every HAProxy named by a pid file under it
and fails the test if any process of ours is left. Measured numbers are logged (run with
``--log-cli-level=INFO`` to see them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provisioner.errors import ProviderError
from provisioner.providers import haproxy_readers as readers
from provisioner.providers.base import (
    KnownResource,
    ListScope,
    LiveResource,
    Owner,
    ProviderContext,
)
from provisioner.providers.haproxy import DEFAULT_HEALTH, HAProxyLB, Layout, _helper
from provisioner.remote.runner import LocalRunner
from tests.haproxy.support import (
    Backend,
    ClientLoop,
    free_port,
    get,
    kill_by_pid_files,
    our_processes,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)
log = logging.getLogger("haproxy_lb.measured")

ADDRESS = "haproxy_lb.front"
INTER_S = DEFAULT_HEALTH["inter_ms"] / 1000
LEAVE_S = INTER_S * DEFAULT_HEALTH["fall"] + 1.0  # the promise: out of rotation within this
BACK_S = INTER_S * DEFAULT_HEALTH["rise"] + 1.0


@dataclass
class Env:
    root: Path
    ctx: ProviderContext
    lb: HAProxyLB
    backends: list[Backend] = field(default_factory=list)
    progress: list[tuple[str, str]] = field(default_factory=list)

    def backend(self, name: str) -> Backend:
        backend = Backend(name)
        self.backends.append(backend)
        return backend

    def desired(self, backends: list[Backend], **more) -> dict:
        return {"target": None, "name": "front", "node_dir": str(self.root),
                "bind_address": "127.0.0.1", "listen_port": free_port(),
                "backends": [backend.spec() for backend in backends], **more}

    @property
    def layout(self) -> Layout:
        return Layout.of(str(self.root), "front")

    def proc(self) -> readers.ProcTable:
        return readers.parse_show_proc(self.cli(self.layout.master, "show proc"))

    def cli(self, sock: str, command: str) -> str:
        return LocalRunner().run(_helper("cli", sock, command)).stdout

    def in_rotation(self, live, name: str) -> bool:
        servers = {s["name"]: s for s in self.lb.status(live)["backends"]}
        return servers[name]["in_rotation"]

    def all_checked_up(self, live) -> bool:
        """Every server UP after a passed check. Before its first check a server shows
        "UP 1/2", and a single failed check takes it DOWN: the timings below start from UP."""
        return all(s["status"] == "UP" and s["check_status"] == "L7OK"
                   for s in self.lb.status(live)["backends"])

    def listed(self, desired: dict, owner: Owner | None = None):
        lb = HAProxyLB(ProviderContext(owner or self.ctx.owner, self.root, self.root))
        return lb.list(ListScope(owner or self.ctx.owner, [KnownResource(ADDRESS, desired)]))


@pytest.fixture
def env():
    # A short root: unix socket paths must stay below ~100 characters.
    root = Path(tempfile.mkdtemp(prefix="hxlb", dir="/tmp"))
    progress: list[tuple[str, str]] = []
    ctx = ProviderContext(Owner("test", str(uuid.uuid4())), root, root,
                          lambda address, message: progress.append((address, message)))
    environment = Env(root, ctx, HAProxyLB(ctx), progress=progress)
    try:
        yield environment
    finally:
        for backend in environment.backends:
            backend.kill()
        kill_by_pid_files(root)
        left = our_processes(root)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"HAProxy processes of this test survived: {left}"


def spread(url: str, count: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(count):
        status, body = get(url)
        assert status == 200, body
        seen[body] = seen.get(body, 0) + 1
    return seen


# ---- create / list / delete ---------------------------------------------------------------------


def test_create_serves_every_backend_list_finds_it_and_delete_removes_everything(env):
    backends = [env.backend(name) for name in ("a", "b", "c")]
    desired = env.desired(list(reversed(backends)))
    assert env.listed(desired) == []

    live = env.lb.create(ADDRESS, desired, "token-1")
    url = live.attributes["url"]
    assert url == f"http://127.0.0.1:{desired['listen_port']}"
    assert live.token == "token-1" and live.attributes["master_pid"] > 0
    assert {k: live.attributes[k] for k in desired} == desired  # as given, order included
    config = (env.root / "haproxy/front/haproxy.cfg").read_text()
    assert config.index("server a ") < config.index("server b ") < config.index("server c ")
    assert stat.S_IMODE(os.stat(env.layout.master).st_mode) == 0o600

    seen = spread(url, 30)
    assert set(seen) == {"a", "b", "c"}, seen
    assert min(seen.values()) >= 5, f"leastconn should rotate over idle servers: {seen}"
    status = env.lb.status(live)
    assert [s["name"] for s in status["backends"]] == ["a", "b", "c"]
    assert wait_for(lambda: env.all_checked_up(live), INTER_S + 2)

    (found,) = env.listed(desired)
    assert (found.address, found.id, found.token) == (ADDRESS, live.id, "token-1")
    assert found.attributes == live.attributes
    assert env.listed(desired, Owner("test", str(uuid.uuid4()))) == []  # another state's

    again = env.lb.create(ADDRESS, desired, "token-1")  # same token: adopted, not restarted
    assert again.attributes["master_pid"] == live.attributes["master_pid"]
    with pytest.raises(ProviderError, match="already runs"):
        env.lb.create(ADDRESS, desired, "token-2")
    with pytest.raises(ProviderError, match="belongs to another state"):
        HAProxyLB(ProviderContext(Owner("test", "other-lineage"), env.root, env.root)).create(
            ADDRESS, desired, "token-1")

    env.lb.delete(ADDRESS, live)
    assert our_processes(env.root) == []
    assert not Path(env.layout.dir).exists()
    assert (env.root / "haproxy").is_dir()  # only our own directory goes
    assert env.listed(desired) == []
    env.lb.delete(ADDRESS, live)  # already gone: success
    with pytest.raises(OSError):
        get(url, timeout=1)


def test_an_interrupted_create_is_not_listed_and_a_new_create_replaces_it(env):
    backend = env.backend("a")
    desired = env.desired([backend])
    # What a create killed after writing its marker leaves: owner.json, nothing running.
    marker = {"address": ADDRESS, "token": "lost", "cluster": "test",
              "lineage": env.ctx.owner.lineage, "attributes": desired}
    Path(env.layout.dir).mkdir(parents=True)
    Path(env.layout.owner).write_text(json.dumps(marker))
    assert env.listed(desired) == []
    live = env.lb.create(ADDRESS, desired, "token-new")
    assert spread(live.attributes["url"], 3) == {"a": 3}
    assert env.listed(desired)[0].token == "token-new"
    assert any("interrupted create" in message for _, message in env.progress)


def test_list_reads_a_machine_in_one_command_and_skips_a_crashed_balancer(env, monkeypatch):
    a = env.backend("a")
    front, back = env.desired([a]), {**env.desired([a]), "name": "back"}
    env.lb.create(ADDRESS, front, "t1")
    env.lb.create("haproxy_lb.back", back, "t2")
    known = [KnownResource(ADDRESS, front), KnownResource("haproxy_lb.back", back)]
    commands: list[str] = []
    run = LocalRunner.run
    monkeypatch.setattr(LocalRunner, "run", lambda self, command, **kwargs: (
        commands.append(command), run(self, command, **kwargs))[1])
    found = env.lb.list(ListScope(env.ctx.owner, known))
    assert sorted((r.address, r.token) for r in found) == [("haproxy_lb.back", "t2"),
                                                           (ADDRESS, "t1")]
    assert len(commands) == 1  # one machine, one command
    monkeypatch.undo()

    # The front master crashes: it is not listed, cannot be updated, and a new create
    # (the plan after refresh) replaces it in place.
    os.killpg(int(Path(env.layout.pid).read_text()), signal.SIGKILL)
    assert wait_for(lambda: [r.address for r in env.lb.list(ListScope(env.ctx.owner, known))]
                    == ["haproxy_lb.back"], 5)
    with pytest.raises(ProviderError, match="not running") as stopped:
        env.lb.update(ADDRESS, LiveResource(ADDRESS, "x", front, "t1"), front)
    assert "plan" in stopped.value.hint
    live = env.lb.create(ADDRESS, front, "t3")
    assert spread(live.attributes["url"], 2) == {"a": 2}


# ---- health --------------------------------------------------------------------------------------


def test_a_draining_backend_leaves_rotation_and_comes_back(env):
    a, b = env.backend("a"), env.backend("b")
    live = env.lb.create(ADDRESS, env.desired([a, b]), "t")
    url = live.attributes["url"]
    assert wait_for(lambda: env.all_checked_up(live), INTER_S + 2)

    with ClientLoop(url, max_requests=10**6, max_s=LEAVE_S + 4) as loop:
        time.sleep(0.3)
        b.healthy = False  # /-/healthz answers 503, /hello still works: only the LB moves
        switched = time.monotonic()
        assert wait_for(lambda: not env.in_rotation(live, "b"), LEAVE_S + 2, interval=0.02)
        left_status = time.monotonic() - switched
        time.sleep(1.5)
        result = loop.stop()
    last_b = max((t for t, name in result.hits if name == "b"), default=switched) - switched
    log.info("draining backend: out of rotation after %.2fs (status), last request to it "
             "%.2fs after the switch (limit %.1fs); %d requests, %d failed",
             left_status, last_b, LEAVE_S, result.requests, len(result.failures))
    assert left_status <= LEAVE_S and last_b <= LEAVE_S
    assert result.failures == []  # a draining node still answers: nothing fails meanwhile

    hits = b.hits
    spread(url, 20)
    assert b.hits == hits, "a DOWN backend must get no traffic"
    b.healthy = True
    recovered = time.monotonic()
    assert wait_for(lambda: env.in_rotation(live, "b"), BACK_S + 2, interval=0.02)
    back = time.monotonic() - recovered
    log.info("recovered backend: back in rotation after %.2fs (limit %.1fs)", back, BACK_S)
    assert back <= BACK_S
    assert spread(url, 20).get("b", 0) > 0


def test_a_killed_backend_costs_clients_little_and_nothing_after_the_health_window(env):
    a, b, c = env.backend("a"), env.backend("b"), env.backend("c")
    live = env.lb.create(ADDRESS, env.desired([a, b, c]), "t")
    url = live.attributes["url"]
    assert wait_for(lambda: env.all_checked_up(live), INTER_S + 2)
    for keep_alive in (False, True):
        backend = c if not keep_alive else b
        with ClientLoop(url, max_requests=10**6, max_s=LEAVE_S + 2,
                        keep_alive=keep_alive) as loop:
            time.sleep(0.5)
            killed = time.monotonic()
            backend.kill()
            result = loop.wait()
        late = [f for f in result.failures if f[0] > killed + LEAVE_S]
        log.info("killed backend %s (client keep-alive %s): %d of %d requests failed, first "
                 "%s, none later than %.1fs: %s", backend.name, keep_alive,
                 len(result.failures), result.requests,
                 result.failures[:1], LEAVE_S, not late)
        assert late == [], late
        assert len(result.failures) <= 5, result.failures
        assert not env.in_rotation(live, backend.name)
    assert spread(url, 10) == {"a": 10}


# ---- update --------------------------------------------------------------------------------------


def test_update_under_load_drops_nothing_and_unchanged_does_not_reload(env):
    a, b, c = env.backend("a"), env.backend("b"), env.backend("c")
    desired = env.desired([a, b, c])
    live = env.lb.create(ADDRESS, desired, "t")
    url = live.attributes["url"]
    first = env.proc()

    # Remove b while a client sends continuously.
    removed = {**desired, "backends": [a.spec(), c.spec()]}
    with ClientLoop(url, max_requests=2000, max_s=10) as loop:
        assert wait_for(lambda: loop.result.requests > 200, 5)
        started = time.monotonic()
        live = env.lb.update(ADDRESS, live, removed)
        took = time.monotonic() - started
        result = loop.wait()
    after_b = [t for t, name in result.hits if name == "b" and t > started + took]
    log.info("update removing a backend under load: reload took %.2fs; %d requests, %d failed",
             took, result.requests, len(result.failures))
    assert result.failures == [], result.failures[:5]
    assert after_b == []
    assert result.requests >= 1000  # the loop really ran across the reload
    second = env.proc()
    assert second.master_pid == first.master_pid == live.attributes["master_pid"]
    assert second.worker_pids != first.worker_pids and second.reloads == 1

    # A keep-alive client across a reload too.
    with ClientLoop(url, max_requests=2000, max_s=10, keep_alive=True) as loop:
        assert wait_for(lambda: loop.result.requests > 200, 5)
        live = env.lb.update(ADDRESS, live, desired)  # b back
        result = loop.wait()
    log.info("update adding a backend under load (keep-alive client): %d requests, %d failed",
             result.requests, len(result.failures))
    assert result.failures == [], result.failures[:5]

    # Add d: it gets traffic.
    d = env.backend("d")
    grown = {**desired, "backends": desired["backends"] + [d.spec()]}
    live = env.lb.update(ADDRESS, live, grown)
    assert wait_for(lambda: env.in_rotation(live, "d"), 5)
    assert spread(url, 40).get("d", 0) > 0

    # Same set, another order, install flipped (ignored for the config): no reload.
    before = env.proc()
    digest = live.attributes["config_digest"]
    same = {**grown, "backends": list(reversed(grown["backends"])), "install": True}
    live = env.lb.update(ADDRESS, live, same)
    after = env.proc()
    assert (after.master_pid, after.worker_pids, after.reloads) == (
        before.master_pid, before.worker_pids, before.reloads)
    assert live.attributes["config_digest"] == digest
    assert env.listed(same)[0].attributes["backends"] == same["backends"]  # recorded as given
    assert "config unchanged: no reload" in [message for _, message in env.progress]


def test_health_states_survive_a_reload(env):
    a, b = env.backend("a"), env.backend("b")
    desired = env.desired([a, b])
    live = env.lb.create(ADDRESS, desired, "t")
    assert wait_for(lambda: env.all_checked_up(live), INTER_S + 2)
    b.healthy = False
    assert wait_for(lambda: not env.in_rotation(live, "b"), LEAVE_S + 2)
    c = env.backend("c")
    live = env.lb.update(ADDRESS, live, {**desired, "backends": desired["backends"] + [c.spec()]})
    hits = b.hits
    seen = spread(live.attributes["url"], 30)  # right after the reload
    assert b.hits == hits and "b" not in seen, "the new worker must start with b DOWN"
    assert not env.in_rotation(live, "b")


def test_a_backend_that_moves_to_another_port_is_followed(env):
    # HAProxy 2.6 would apply the saved port of a server over the config's one: only states
    # of servers that stay where they were are carried over a reload.
    old, new = env.backend("old"), env.backend("new")
    desired = env.desired([old])
    desired["backends"] = [{**old.spec(), "name": "node"}]
    live = env.lb.create(ADDRESS, desired, "t")
    assert wait_for(lambda: env.all_checked_up(live), INTER_S + 2)
    live = env.lb.update(ADDRESS, live, {**desired, "backends": [{**new.spec(), "name": "node"}]})
    assert spread(live.attributes["url"], 10) == {"new": 10}


# ---- refused configs -----------------------------------------------------------------------------


def test_a_config_haproxy_refuses_changes_nothing_running(env):
    a, b = env.backend("a"), env.backend("b")
    desired = env.desired([a, b])
    live = env.lb.create(ADDRESS, desired, "t")
    url = live.attributes["url"]
    before = env.proc()
    digest = live.attributes["config_digest"]

    # Refused by `haproxy -c`: the swap never happens.
    bad = {**desired, "backends": [a.spec(), {"name": "x", "address": "no-such-host.invalid",
                                              "port": 8000}]}
    with pytest.raises(ProviderError, match="could not resolve address 'no-such-host.invalid'"):
        env.lb.update(ADDRESS, live, bad)
    with pytest.raises(ProviderError, match="has neither service port nor check port"):
        env.lb.update(ADDRESS, live, {**desired, "backends": [{**a.spec(), "port": 0}]})
    assert not Path(env.layout.new).exists()

    # Refused at reload: the new listen port is taken (`haproxy -c` does not bind).
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = {**desired, "listen_port": holder.getsockname()[1]}
        with pytest.raises(ProviderError) as refused:
            env.lb.update(ADDRESS, live, taken)
    log.info("reload refused by HAProxy: %s", refused.value)
    assert "cannot bind socket (Address already in use)" in str(refused.value)
    assert "previous config still serves" in str(refused.value)

    after = env.proc()
    assert after.master_pid == before.master_pid and after.worker_pids == before.worker_pids
    assert after.failed_reloads == 1
    assert env.listed(desired)[0].attributes["config_digest"] == digest  # old file put back
    assert set(spread(url, 10)) == {"a", "b"}

    # The master recovers: the next good update reloads normally.
    live = env.lb.update(ADDRESS, live, {**desired, "backends": [a.spec()]})
    assert spread(url, 5) == {"a": 5}
    assert env.proc().worker_pids != before.worker_pids


def test_a_create_haproxy_refuses_leaves_nothing(env):
    a = env.backend("a")
    bad = env.desired([a])
    bad["backends"] = [{"name": "x", "address": "no-such-host.invalid", "port": 8000}]
    with pytest.raises(ProviderError, match="could not resolve address"):
        env.lb.create(ADDRESS, bad, "t")
    assert not Path(env.layout.dir).exists()

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = env.desired([a], listen_port=holder.getsockname()[1])
        with pytest.raises(ProviderError, match="cannot bind socket"):
            env.lb.create(ADDRESS, taken, "t")
    assert not Path(env.layout.dir).exists()
    assert our_processes(env.root) == []


def test_invalid_attributes_are_refused_before_touching_the_machine(env):
    a = env.backend("a")
    cases = [
        ({"name": "../x"}, "name"),
        ({"node_dir": "relative"}, "node_dir"),
        ({"listen_port": 70000}, "listen_port"),
        ({"health": {"inter": 5}}, "health takes"),
        ({"health": {"fall": 0}}, "health.fall"),
        ({"backends": [a.spec(), a.spec()]}, "two backends"),
        ({"backends": [{"name": "bad name", "address": "x", "port": 1}]}, "name"),
        ({"colour": "red"}, "unknown attributes"),
    ]
    for change, match in cases:
        with pytest.raises(ProviderError, match=match):
            env.lb.create(ADDRESS, {**env.desired([a]), **change}, "t")
    assert not (env.root / "haproxy").exists()


# ---- install -------------------------------------------------------------------------------------


def test_missing_haproxy_is_an_error_or_installed_with_apt_get(env, tmp_path, monkeypatch):
    a = env.backend("a")

    class Elsewhere(HAProxyLB):
        haproxy_candidates = ("haproxy-under-test",)

    lb = Elsewhere(env.ctx)
    with pytest.raises(ProviderError, match="haproxy not installed") as missing:
        lb.create(ADDRESS, env.desired([a]), "t")
    assert "apt-get install -y haproxy" in missing.value.hint
    assert not Path(env.layout.dir).exists()

    # A stand-in apt-get that "installs" haproxy-under-test, and a `service` that records.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "apt-get $*" >>{calls}\n'
        f'ln -sf /usr/sbin/haproxy {bin_dir}/haproxy-under-test\n')
    (bin_dir / "service").write_text(f'#!/bin/sh\necho "service $*" >>{calls}\n')
    for tool in ("apt-get", "service"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    live = lb.create(ADDRESS, env.desired([a], install=True), "t")
    assert calls.read_text().splitlines() == ["apt-get install -y haproxy", "service haproxy stop"]
    assert spread(live.attributes["url"], 2) == {"a": 2}
    lb.delete(ADDRESS, live)


# ---- concurrency of status with reloads ----------------------------------------------------------


def test_status_answers_while_reloading(env):
    a, b = env.backend("a"), env.backend("b")
    desired = env.desired([a, b])
    live = env.lb.create(ADDRESS, desired, "t")
    errors: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            facts = env.lb.status(live)
            if "error" in facts:
                errors.append(facts["error"])

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        for backends in ([a], [a, b], [b]):
            live = env.lb.update(ADDRESS, live, {**desired,
                                                 "backends": [x.spec() for x in backends]})
    finally:
        stop.set()
        poller.join()
    log.info("status during 3 reloads: %d errors", len(errors))
    assert len(errors) <= 3, errors

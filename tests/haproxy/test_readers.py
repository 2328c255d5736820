"""The pure readers of haproxy_readers on outputs recorded from a real HAProxy 2.6.12
(``python -m tests.haproxy.record_fixtures`` records them again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.providers import haproxy_readers as readers

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_show_stat_reports_each_server_with_its_health():
    servers = {s.name: s for s in readers.parse_show_stat(fixture("show_stat_mixed.csv"))}
    assert sorted(servers) == ["node-a", "node-b", "node-c"]  # no FRONTEND/BACKEND rows
    a, b, c = servers["node-a"], servers["node-b"], servers["node-c"]
    assert (a.status, a.check_status, a.check_code, a.in_rotation) == ("UP", "L7OK", 200, True)
    assert a.address.startswith("127.0.0.1:") and a.total_sessions == 2
    # draining Serve node: 503 on /-/healthz
    assert (b.status, b.check_status, b.check_code, b.in_rotation) == ("DOWN", "L7STS", 503,
                                                                       False)
    assert b.check_desc == "Layer7 wrong status: Service Unavailable"
    # node gone: connection refused
    assert (c.status, c.check_status, c.in_rotation) == ("DOWN", "L4CON", False)
    assert c.check_desc == "Layer4 connection problem: Connection refused"
    assert readers.parse_show_stat(fixture("show_stat_mixed.csv"), backend="other") == []


def test_show_stat_transitional_states_count_as_in_rotation():
    servers = {s.name: s for s in readers.parse_show_stat(fixture("show_stat_going_down.csv"))}
    unchecked = [s for s in servers.values() if s.status == "UP 1/2"]
    assert unchecked and all(s.in_rotation and s.check_status == "INI" for s in unchecked)
    assert servers["node-a"].as_dict()["in_rotation"] is True


def test_show_stat_refuses_other_text():
    with pytest.raises(ValueError, match="show stat"):
        readers.parse_show_stat("Unknown command\n")


def test_show_proc_fresh_master_and_one_worker():
    proc = readers.parse_show_proc(fixture("show_proc_fresh.txt"))
    assert proc.reloads == 0 and proc.failed_reloads == 0
    assert len(proc.workers) == 1 and proc.old_workers == ()
    assert proc.workers[0].kind == "worker" and proc.worker_pids[0] != proc.master_pid


def test_show_proc_after_reload_lists_the_old_worker_apart():
    fresh = readers.parse_show_proc(fixture("show_proc_fresh.txt"))
    proc = readers.parse_show_proc(fixture("show_proc_old_worker.txt"))
    assert proc.master_pid == fresh.master_pid  # the master re-executes itself in place
    assert proc.reloads == 1
    assert proc.old_workers[0].pid == fresh.worker_pids[0] and proc.old_workers[0].reloads == 1
    assert proc.worker_pids != fresh.worker_pids and proc.workers[0].reloads == 0


def test_show_proc_after_a_refused_reload_keeps_the_worker():
    before = readers.parse_show_proc(fixture("show_proc_old_worker.txt"))
    proc = readers.parse_show_proc(fixture("show_proc_reload_failed.txt"))
    assert proc.failed_reloads == 1 and proc.reloads == 2
    assert proc.worker_pids == before.worker_pids  # still the previous worker, still serving


def test_show_proc_refuses_other_text():
    with pytest.raises(ValueError):
        readers.parse_show_proc("")
    with pytest.raises(ValueError):
        readers.parse_show_proc("#<PID> <type>\nsomething odd here\n")


def test_load_outcome_of_a_reload():
    assert readers.load_outcome(fixture("log_reload_success.txt")) == readers.LoadOutcome(True, ())
    failed = readers.load_outcome(fixture("log_reload_failure.txt"))
    assert failed.ok is False
    assert any("cannot bind socket (Address already in use)" in line for line in failed.alerts)
    assert all(line.startswith("[ALERT] ") and "(" not in line[:12] for line in failed.alerts)
    assert readers.load_outcome("[NOTICE]   (1) : Reloading HAProxy\n").ok is None


def test_alerts_of_a_refused_check():
    alerts = readers.alerts(fixture("check_unresolvable.txt"))
    assert len(alerts) == 2  # the WARNING and NOTICE lines are left out
    assert alerts[0].startswith("[ALERT] config : [/var/lib/provisioner/haproxy/rec/bad.cfg:")
    assert alerts[0].endswith("'server serve_proxies/node-a' : could not resolve address "
                              "'no-such-host.invalid'.")
    assert alerts[1] == "[ALERT] config : Failed to initialize server(s) addr."


def test_inventory():
    (entry,) = readers.parse_inventory(fixture("inventory.jsonl"))
    assert entry.dir == "/var/lib/provisioner/haproxy/rec"
    assert entry.alive and entry.pid > 0 and len(entry.digest) == 64
    assert entry.owner["address"] == "haproxy_lb.rec" and entry.owner["token"] == "token-rec"
    assert {b["name"] for b in entry.owner["attributes"]["backends"]} == {"node-a", "node-b"}
    broken = '{"dir": "/x/haproxy/y", "owner": "{not json", "pid": null, "alive": false}\n'
    assert readers.parse_inventory(broken)[0].owner is None
    assert readers.parse_inventory("\n") == []


def test_carry_server_states_keeps_only_servers_that_stay_where_they_were():
    dump = fixture("show_servers_state.txt")
    rows = {line.split()[3]: line.split() for line in dump.splitlines()[2:] if line.strip()}
    a_port, b_port = rows["node-a"][18], rows["node-b"][18]
    backends = [{"name": "node-a", "address": "127.0.0.1", "port": int(a_port)},
                {"name": "node-b", "address": "127.0.0.1", "port": int(b_port) + 1},  # moved
                {"name": "node-d", "address": "127.0.0.1", "port": 9}]  # new
    carried = readers.carry_server_states(dump, backends).splitlines()
    assert carried[:2] == dump.splitlines()[:2]  # version and header, as HAProxy wants them
    assert [line.split()[3] for line in carried[2:]] == ["node-a"]  # node-c left the config
    assert readers.carry_server_states(dump, backends, backend="other").splitlines()[2:] == []
    assert readers.carry_server_states("", backends) == ""
    assert readers.carry_server_states("Unknown command\n", backends) == ""

"""Recover on namespace hosts: real sshd, real Ray, real Serve, real HAProxy.

Hosts lb, head, w1, w2 and the standby sb; the quickstart's two apps (both answer with their
version). A client loop sends requests through the LB the whole time. One story, in order:
apply -> recover on a healthy cluster changes nothing -> kill the head's host -> recover with a
missing and with a corrupt checkpoint: exit 4, nothing changed -> recover: the head moves to sb,
every route answers with the same versions, no failed request after it -> kill sb, bring it back
empty, recover: the head returns to sb -> destroy.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.e2e.ssh_support import ClientLoop, cli, eventually, get, session_ids, ssh_cluster
from tests.support import json_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

HOSTS = ["lb", "head", "w1", "w2", "sb"]
NO_CHECKPOINT = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with ssh_cluster(tmp_path_factory.mktemp("recover"), HOSTS, prefix="prvr",
                     subnet="10.237.7", standby=["sb"]) as made:
        yield made


def versions(lb: str) -> tuple:
    hello = get(f"{lb}/hello")
    status, body = get(f"{lb}/api/")
    return hello, (status, json.loads(body) if status == 200 else body)


def lb_servers(info) -> str:
    """HAProxy's view of its backends (for failure messages)."""
    query = ("import glob, socket; s = socket.socket(socket.AF_UNIX); "
             "s.connect(glob.glob('/var/lib/provisioner/haproxy/*/stats.sock')[0]); "
             "s.sendall(b'show servers state\\n'); print(s.makefile().read())")
    return info.harness.exec("lb", [sys.executable, "-c", query]).stdout


def state_bytes(workdir) -> bytes:
    return (workdir / ".provisioner" / "state.json").read_bytes()


def print_timeline(result) -> None:
    """When each step of a recovery ended (seconds from the first event)."""
    events = list(json_events(result.stdout))
    start = _seconds(events[0]["timestamp"])
    for event in events:
        if event["type"] in ("head_lost", "plan_start", "apply_complete", "recover_complete"):
            print(f"  {_seconds(event['timestamp']) - start:5.1f}s {event['message'][:90]}")


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def recovered(result, workdir) -> dict:
    assert result.returncode == 0, result.stdout + result.stderr
    events = list(json_events(result.stdout))
    done = [e for e in events if e["type"] == "recover_complete"]
    assert done, result.stdout
    state = json.loads(state_bytes(workdir))
    assert state["history"]["recoveries"][-1]["seconds"] == done[0]["elapsed_s"]
    return done[0]


def test_recover_story(cluster) -> None:
    workdir, info = cluster
    lb = f"http://{info.address('lb')}:8080"
    expected = ((200, "hello world (v1)"), (200, {"service": "api", "version": "v1"}))

    applied = cli(cluster, "apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Checkpoint " in applied.stdout
    assert versions(lb) == expected
    listed = json.loads(cli(cluster, "checkpoint", "list", "--json").stdout)
    assert [c["latest"] for c in listed["checkpoints"]] == [True]
    assert listed["checkpoints"][0]["apps"] == ["api", "hello"]

    # Healthy: nothing to do, nothing written.
    before = state_bytes(workdir)
    healthy = cli(cluster, "recover", "--auto-approve")
    assert healthy.returncode == 0 and "healthy" in healthy.stdout, healthy.stdout + healthy.stderr
    assert state_bytes(workdir) == before

    with ClientLoop(f"{lb}/hello") as loop:
        time.sleep(2)
        killed_at = time.monotonic()
        info.harness.kill("head")

        # No usable checkpoint: exit 4 and the state is untouched (the head stays lost).
        missing = cli(cluster, "recover", "--auto-approve", "--checkpoint", "no-such-id")
        assert missing.returncode == NO_CHECKPOINT, missing.stdout + missing.stderr
        assert "no checkpoint no-such-id" in missing.stderr
        manifest = next((workdir / ".provisioner" / "checkpoints" / "checkpoints").glob(
            "*/manifest.yaml"))
        good = manifest.read_bytes()
        manifest.write_bytes(good.replace(b"hello:app", b"hello:broken"))
        corrupt = cli(cluster, "recover", "--auto-approve")
        assert corrupt.returncode == NO_CHECKPOINT, corrupt.stdout + corrupt.stderr
        assert "damaged" in corrupt.stderr
        assert state_bytes(workdir) == before
        manifest.write_bytes(good)

        result = cli(cluster, "recover", "--auto-approve", "--json")
        done_at = time.monotonic()
        time.sleep(5)
    done = recovered(result, workdir)
    print_timeline(result)
    assert done["data"]["head"] == "sb"
    assert versions(lb) == expected, (result.stdout, lb_servers(info))
    before_kill = loop.failures() - loop.failures(after=killed_at)
    during = loop.failures(after=killed_at) - loop.failures(after=done_at)
    print(f"\nrecover (head host lost, standby takes over): {done['elapsed_s']:.1f}s; "
          f"{len(loop.results)} requests, failed: {before_kill} before the loss, "
          f"{during} during recovery, {loop.failures(after=done_at)} after")
    assert before_kill == 0
    assert loop.failures(after=done_at) == 0, loop.errors
    sessions = session_ids(cluster, ["sb", "w1", "w2"])
    assert len(set(sessions.values())) == 1, sessions  # the workers joined the new head
    # The lost machine stays in the spec (now a standby): until it answers again the plan
    # wants to re-establish it, and nothing else.
    after = cli(cluster, "plan", "--detailed-exitcode")
    assert after.returncode == 2, after.stdout + after.stderr
    assert "# ssh_host.head will be created" in after.stdout
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in after.stdout, after.stdout

    # The new head's host dies too and comes back empty: the head returns to it.
    info.harness.kill("sb")
    info.harness.restart("sb")
    again = cli(cluster, "recover", "--auto-approve", "--json")
    done = recovered(again, workdir)
    print_timeline(again)
    assert done["data"]["head"] == "sb"
    assert eventually(lambda: versions(lb), expected, seconds=30) is True
    print(f"recover (same host back, empty): {done['elapsed_s']:.1f}s")

    destroyed = cli(cluster, "destroy", "--auto-approve")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    for name in ["lb", "sb", "w1", "w2"]:
        processes = info.harness.exec(name, "ps -eo args").stdout
        assert "raylet" not in processes and "haproxy" not in processes, (name, processes)

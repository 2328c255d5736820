"""StateSession: lock waiting, expiry takeover, renewal, group commit, compare-and-swap races."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from state import journal
from state.backend import LockInfo
from state.document import PendingOperation, ResourceRecord, StateDocument
from state.errors import LockHeldError, StateConflictError
from state.local import LocalBackend
from state.session import StateSession


class CountingBackend(LocalBackend):
    """A local backend that counts writes and makes each one slow, so that callers pile up."""

    def __init__(self, path: Path, write_delay: float = 0.0) -> None:
        super().__init__(path)
        self.write_delay = write_delay
        self.writes: list[int] = []

    def write(self, document: StateDocument, *, expected_version: str | None) -> str:
        time.sleep(self.write_delay)
        version = super().write(document, expected_version=expected_version)
        self.writes.append(document.serial)
        return version


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "state.json")


def add_resource(address: str) -> Callable[[StateDocument], None]:
    def change(doc: StateDocument) -> None:
        doc.resources[address] = ResourceRecord(type="t", id=address)

    return change


def test_new_state_is_written_on_first_update(backend: LocalBackend) -> None:
    with StateSession(backend, operation="apply") as session:
        assert session.document.serial == 0 and session.version is None
        assert backend.read() is None  # nothing written yet
        stored = session.update(add_resource("a.one"))
        assert stored.serial == 1 and "a.one" in stored.resources
        assert session.document == stored
    snapshot = backend.read()
    assert snapshot is not None and snapshot.document == stored
    assert backend.read_lock() is None  # released on exit
    assert StateSession.read_only(backend) == stored


def test_read_only_of_empty_store(backend: LocalBackend) -> None:
    assert StateSession.read_only(backend) is None


def test_lock_released_when_body_raises(backend: LocalBackend) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with StateSession(backend, operation="apply"):
            assert backend.read_lock() is not None
            raise RuntimeError("boom")
    assert backend.read_lock() is None


def test_lock_timeout_waits_then_raises_with_holder(backend: LocalBackend) -> None:
    holder = LockInfo.for_operation("destroy", 60)
    backend.acquire_lock(holder)
    waits: list[LockInfo] = []
    started = time.monotonic()
    with pytest.raises(LockHeldError) as raised:
        with StateSession(backend, operation="apply", lock_timeout=0.6, on_wait=waits.append):
            pytest.fail("entered a locked state")
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 3.0
    assert raised.value.info == holder
    assert "destroy" in str(raised.value)
    assert len(waits) >= 2 and all(info == holder for info in waits)
    assert backend.read_lock() == holder


def test_lock_timeout_zero_is_one_try(backend: LocalBackend) -> None:
    backend.acquire_lock(LockInfo.for_operation("destroy", 60))
    waits: list[LockInfo] = []
    with pytest.raises(LockHeldError):
        with StateSession(backend, operation="apply", on_wait=waits.append):
            pass
    assert waits == []


def test_waiting_gets_the_lock_when_it_is_released(backend: LocalBackend) -> None:
    holder = LockInfo.for_operation("apply", 60)
    backend.acquire_lock(holder)
    threading.Timer(0.3, backend.release_lock, args=(holder,)).start()
    with StateSession(backend, operation="plan", lock_timeout=10) as session:
        assert session.lock_info is not None
        assert backend.read_lock() == session.lock_info


def test_expired_lock_is_taken_over(backend: LocalBackend) -> None:
    backend.acquire_lock(LockInfo.for_operation("apply", 0.2))  # a run that died
    time.sleep(0.3)
    with StateSession(backend, operation="apply") as session:
        held = backend.read_lock()
        assert held is not None and session.lock_info is not None
        assert held.id == session.lock_info.id


def test_renewal_keeps_a_short_lock_alive(backend: LocalBackend) -> None:
    ttl = 0.4
    with StateSession(backend, operation="apply", lock_ttl=ttl) as session:
        for _ in range(3):  # three ttls
            time.sleep(ttl)
            with pytest.raises(LockHeldError):
                backend.acquire_lock(LockInfo.for_operation("other", 60))
        assert not session.lock_lost
        session.update(add_resource("a.one"))
    assert backend.read_lock() is None


def test_lost_lock_stops_updates(backend: LocalBackend) -> None:
    with StateSession(backend, operation="apply", lock_ttl=0.3) as session:
        session.update(add_resource("a.one"))
        assert session.lock_info is not None
        backend.force_unlock(session.lock_info.id)
        intruder = LockInfo.for_operation("intruder", 60)
        backend.acquire_lock(intruder)
        deadline = time.monotonic() + 3
        while not session.lock_lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert session.lock_lost
        with pytest.raises(LockHeldError, match="lock lost"):
            session.update(add_resource("a.two"))
    assert backend.read_lock() == intruder  # not released by the session that lost it
    snapshot = backend.read()
    assert snapshot is not None and "a.two" not in snapshot.document.resources


def test_group_commit(tmp_path: Path) -> None:
    backend = CountingBackend(tmp_path / "state.json", write_delay=0.05)
    threads_n = 20
    start = threading.Barrier(threads_n)
    returned: dict[int, StateDocument] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            start.wait()
            returned[i] = session.update(add_resource(f"r.n{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with StateSession(backend, operation="apply") as session:
        before = session.document.serial
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    snapshot = backend.read()
    assert snapshot is not None
    final = snapshot.document
    assert set(final.resources) == {f"r.n{i}" for i in range(threads_n)}  # no lost update
    # Each durable write bumps the serial by exactly one, and they were batched.
    assert backend.writes == list(range(before + 1, final.serial + 1))
    assert final.serial - before == len(backend.writes) < threads_n
    for i, doc in returned.items():
        assert f"r.n{i}" in doc.resources  # returned only once its change was durable


def test_failed_change_leaves_nothing(backend: LocalBackend) -> None:
    def bad(doc: StateDocument) -> None:
        doc.outputs["half"] = True
        raise ValueError("change failed")

    with StateSession(backend, operation="apply", lock=False) as session:
        with pytest.raises(ValueError):
            session.update(bad)
        stored = session.update(add_resource("a.one"))
    assert "half" not in stored.outputs
    assert stored.serial == 1


def test_change_may_not_touch_serial(backend: LocalBackend) -> None:
    with StateSession(backend, operation="apply", lock=False) as session:
        with pytest.raises(ValueError):
            session.update(lambda doc: setattr(doc, "serial", 99))


def test_racing_sessions_conflict(backend: LocalBackend) -> None:
    backend.write(StateDocument.new(), expected_version=None)
    with StateSession(backend, operation="a", lock=False) as first:
        with StateSession(backend, operation="b", lock=False) as second:
            first.update(add_resource("a.one"))
            with pytest.raises(StateConflictError):
                second.update(add_resource("b.one"))
            # The session that lost stays failed: retrying would overwrite the winner.
            with pytest.raises(StateConflictError):
                second.update(add_resource("b.two"))
    snapshot = backend.read()
    assert snapshot is not None
    assert set(snapshot.document.resources) == {"a.one"}


def test_racing_first_writes_conflict(backend: LocalBackend) -> None:
    with StateSession(backend, operation="a", lock=False) as first:
        with StateSession(backend, operation="b", lock=False) as second:
            first.update(add_resource("a.one"))
            with pytest.raises(StateConflictError):
                second.update(add_resource("b.one"))


def test_journal_round_trip(backend: LocalBackend) -> None:
    operation = PendingOperation(token="tok-1", address="a.one", type="t", action="create")
    with StateSession(backend, operation="apply") as session:
        session.update(lambda doc: journal.begin(doc, operation))
        assert journal.pending_by_token(StateSession.read_only(backend)) == {"tok-1": operation}

        def record(doc: StateDocument) -> None:
            journal.finish(doc, "tok-1")
            add_resource("a.one")(doc)

        stored = session.update(record)
    assert stored.pending == [] and "a.one" in stored.resources
    doc = StateDocument.new()
    journal.begin(doc, operation)
    with pytest.raises(ValueError):
        journal.begin(doc, operation)
    assert journal.finish(doc, "tok-1") == operation
    assert journal.finish(doc, "tok-1") is None


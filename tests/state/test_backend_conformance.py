"""The state backend conformance suite: the contract of :mod:`state.backend`, run on every backend.

Written only against the protocol. To add a backend, add a factory to ``FACTORIES``: it gets the
pytest ``request`` and a fresh ``tmp_path`` and returns a function that makes a new client of one
fresh, empty store (each call another client of the same store, as another process would be).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from state.backend import UNKNOWN_LOCK_ID, LockInfo, StateBackend, expiry_after
from state.document import ResourceRecord, StateDocument, to_bytes
from state.errors import LockHeldError, StateConflictError, StateError
from state.local import LocalBackend
from state.session import StateSession

BackendFactory = Callable[[], StateBackend]


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    path = tmp_path / "state-dir" / "state.json"
    return lambda: LocalBackend(path)


def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    """A fresh bucket on this module's moto server (see conftest.py); each backend makes its
    own client from the environment, as another process would."""
    from state.s3 import S3Backend

    bucket = request.getfixturevalue("bucket")
    return lambda: S3Backend(bucket, "clusters/test/state.json")


def _gcs(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    """A fresh bucket on this module's GCS emulator, behind the layer that enforces
    preconditions (see conftest.py); each backend makes its own client from the environment."""
    from state.gcs import GCSBackend

    bucket = request.getfixturevalue("gcs_bucket")
    return lambda: GCSBackend(bucket, "clusters/test/state.json")


FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], BackendFactory]] = {
    "local": _local,
    "s3": _s3,
    "gcs": _gcs,
}


@pytest.fixture(params=sorted(FACTORIES))
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    return FACTORIES[request.param](request, tmp_path)


@pytest.fixture
def backend(make_backend: BackendFactory) -> StateBackend:
    return make_backend()


def doc(lineage: str = "lineage-a", serial: int = 1, **outputs: object) -> StateDocument:
    return StateDocument(lineage=lineage, serial=serial, outputs=dict(outputs))


def lock(operation: str = "apply", ttl: float = 60.0) -> LockInfo:
    return LockInfo.for_operation(operation, ttl)


# -- the document ---------------------------------------------------------------------------


def test_implements_protocol(backend: StateBackend) -> None:
    assert isinstance(backend, StateBackend)
    assert backend.describe()


def test_read_of_empty_store_is_none(backend: StateBackend) -> None:
    assert backend.read() is None
    assert backend.read_lock() is None


def test_first_write_expects_none_and_reads_back(backend: StateBackend) -> None:
    version = backend.write(doc(serial=1, url="http://a"), expected_version=None)
    snapshot = backend.read()
    assert snapshot is not None
    assert snapshot.version == version
    assert snapshot.document == doc(serial=1, url="http://a")


def test_second_write_with_the_read_version(make_backend: BackendFactory) -> None:
    first, second = make_backend(), make_backend()
    v1 = first.write(doc(serial=1), expected_version=None)
    snapshot = second.read()
    assert snapshot is not None and snapshot.version == v1
    v2 = second.write(doc(serial=2, n=2), expected_version=snapshot.version)
    assert v2 != v1
    latest = first.read()
    assert latest is not None
    assert latest.version == v2 and latest.document == doc(serial=2, n=2)


def test_write_with_stale_version_conflicts(backend: StateBackend) -> None:
    v1 = backend.write(doc(serial=1), expected_version=None)
    v2 = backend.write(doc(serial=2), expected_version=v1)
    with pytest.raises(StateConflictError):
        backend.write(doc(serial=3), expected_version=v1)
    snapshot = backend.read()
    assert snapshot is not None and snapshot.version == v2
    assert snapshot.document.serial == 2


def test_of_two_readers_the_second_writer_conflicts(make_backend: BackendFactory) -> None:
    make_backend().write(doc(serial=1), expected_version=None)
    first, second = make_backend(), make_backend()
    read_first, read_second = first.read(), second.read()
    assert read_first is not None and read_second is not None
    assert read_first.version == read_second.version
    won = first.write(doc(serial=2, by="first"), expected_version=read_first.version)
    with pytest.raises(StateConflictError, match="changed since it was read") as lost:
        second.write(doc(serial=2, by="second"), expected_version=read_second.version)
    assert lost.value.hint and "plan again" in lost.value.hint
    stored = make_backend().read()
    assert stored is not None and stored.version == won
    assert stored.document == doc(serial=2, by="first")


def test_of_two_first_writers_one_wins(make_backend: BackendFactory) -> None:
    first, second = make_backend(), make_backend()
    assert first.read() is None and second.read() is None
    first.write(doc(serial=1, by="first"), expected_version=None)
    with pytest.raises(StateConflictError, match="already exists"):
        second.write(doc(serial=1, by="second"), expected_version=None)
    stored = second.read()
    assert stored is not None and stored.document == doc(serial=1, by="first")


def test_write_expecting_none_over_existing_conflicts(backend: StateBackend) -> None:
    backend.write(doc(serial=1), expected_version=None)
    with pytest.raises(StateConflictError):
        backend.write(doc(serial=2), expected_version=None)
    snapshot = backend.read()
    assert snapshot is not None and snapshot.document.serial == 1


def test_write_expecting_a_version_when_empty_conflicts(backend: StateBackend) -> None:
    # A plausible version for every backend (digest, ETag, generation): none matches nothing.
    with pytest.raises(StateConflictError):
        backend.write(doc(serial=1), expected_version="12345")
    assert backend.read() is None


def test_write_of_another_lineage_is_refused(backend: StateBackend) -> None:
    v1 = backend.write(doc("lineage-a", 1), expected_version=None)
    with pytest.raises(StateConflictError, match="lineage"):
        backend.write(doc("lineage-b", 2), expected_version=v1)
    snapshot = backend.read()
    assert snapshot is not None and snapshot.document.lineage == "lineage-a"


@pytest.mark.parametrize("serial", [1, 0])
def test_write_of_a_serial_not_following_is_refused(backend: StateBackend, serial: int) -> None:
    v1 = backend.write(doc(serial=1), expected_version=None)
    with pytest.raises(StateConflictError, match="serial"):
        backend.write(doc(serial=serial, changed=True), expected_version=v1)
    snapshot = backend.read()
    assert snapshot is not None and snapshot.version == v1


def test_equal_documents_give_equal_bytes(backend: StateBackend) -> None:
    # Same content built in different key orders.
    a = StateDocument(lineage="l", serial=1, outputs={"b": 1, "a": {"y": 2, "x": 1}})
    a.resources["z.one"] = ResourceRecord(type="t", id="1", attributes={"k2": 2, "k1": 1})
    a.resources["a.two"] = ResourceRecord(type="t", id="2")
    b = StateDocument(lineage="l", serial=1, outputs={"a": {"x": 1, "y": 2}, "b": 1})
    b.resources["a.two"] = ResourceRecord(type="t", id="2")
    b.resources["z.one"] = ResourceRecord(type="t", id="1", attributes={"k1": 1, "k2": 2})
    assert to_bytes(a) == to_bytes(b)
    backend.write(a, expected_version=None)
    snapshot = backend.read()
    assert snapshot is not None
    assert to_bytes(snapshot.document) == to_bytes(b)


# -- the lock -------------------------------------------------------------------------------


def test_lock_acquire_then_held_error_names_holder(make_backend: BackendFactory) -> None:
    ours, theirs = make_backend(), make_backend()
    mine = lock("apply")
    ours.acquire_lock(mine)
    assert ours.read_lock() == mine
    with pytest.raises(LockHeldError) as raised:
        theirs.acquire_lock(lock("destroy"))
    assert raised.value.info == mine
    assert mine.id in str(raised.value) and mine.holder in str(raised.value)
    assert raised.value.hint and mine.id in raised.value.hint
    assert theirs.read_lock() == mine


def test_lock_is_not_reentrant(backend: StateBackend) -> None:
    mine = lock()
    backend.acquire_lock(mine)
    with pytest.raises(LockHeldError):
        backend.acquire_lock(mine.model_copy(update={"id": "another-run"}))


def test_renew_pushes_expiry_for_holder_only(make_backend: BackendFactory) -> None:
    ours, theirs = make_backend(), make_backend()
    mine = lock(ttl=5)
    ours.acquire_lock(mine)
    renewed = mine.model_copy(update={"expires_at": expiry_after(120)})
    ours.renew_lock(renewed)
    stored = theirs.read_lock()
    assert stored is not None
    assert stored.id == mine.id and stored.expires_at == renewed.expires_at
    with pytest.raises(LockHeldError):
        theirs.renew_lock(lock(ttl=120))
    assert theirs.read_lock() == stored


def test_renew_of_absent_lock_fails(backend: StateBackend) -> None:
    with pytest.raises(LockHeldError):
        backend.renew_lock(lock())


def test_release_only_by_holder(make_backend: BackendFactory) -> None:
    ours, theirs = make_backend(), make_backend()
    mine = lock()
    ours.acquire_lock(mine)
    theirs.release_lock(lock())  # not theirs: nothing happens
    assert ours.read_lock() == mine
    ours.release_lock(mine)
    assert ours.read_lock() is None
    ours.release_lock(mine)  # already gone: no error
    theirs.acquire_lock(lock())


def test_force_unlock_by_id(make_backend: BackendFactory) -> None:
    ours, admin = make_backend(), make_backend()
    mine = lock()
    ours.acquire_lock(mine)
    with pytest.raises(StateError) as wrong:
        admin.force_unlock("not-the-id")
    assert mine.id in str(wrong.value) or mine.id in (wrong.value.hint or "")
    assert admin.read_lock() == mine
    assert admin.force_unlock(mine.id) == mine
    assert admin.read_lock() is None
    with pytest.raises(StateError):
        admin.force_unlock(mine.id)
    # The old holder has lost it: renewing says so, releasing is harmless.
    with pytest.raises(LockHeldError):
        ours.renew_lock(mine)
    ours.release_lock(mine)


def test_expired_lock_can_be_taken_over(make_backend: BackendFactory) -> None:
    dead, alive = make_backend(), make_backend()
    stale = LockInfo(operation="apply", expires_at=expiry_after(-1))
    dead.acquire_lock(stale)
    fresh = lock("apply")
    alive.acquire_lock(fresh)
    assert alive.read_lock() == fresh
    with pytest.raises(LockHeldError):
        dead.renew_lock(stale.model_copy(update={"expires_at": expiry_after(60)}))
    dead.release_lock(stale)
    assert alive.read_lock() == fresh


def test_lock_and_document_are_independent(backend: StateBackend) -> None:
    mine = lock()
    backend.acquire_lock(mine)
    backend.write(doc(serial=1), expected_version=None)
    backend.release_lock(mine)
    snapshot = backend.read()
    assert snapshot is not None and snapshot.document.serial == 1


def test_two_sessions_race_for_the_lock(make_backend: BackendFactory) -> None:
    barrier = threading.Barrier(2)
    loser_done = threading.Event()
    results: dict[str, object] = {}

    def run(name: str) -> None:
        backend = make_backend()
        backend.read_lock()  # a warm client, so that both start at once
        barrier.wait()
        try:
            with StateSession(backend, operation=name) as session:
                results[name] = "won"
                session.update(lambda d: d.outputs.update(winner=name))
                loser_done.wait(15)  # hold the lock until the other has tried
        except LockHeldError as error:
            results[name] = error
            loser_done.set()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(map(str, results.values())).count("won") == 1, results
    (winner,) = [name for name, result in results.items() if result == "won"]
    (error,) = [result for result in results.values() if isinstance(result, LockHeldError)]
    assert error.info is not None and error.info.operation == winner
    assert error.hint and f"force-unlock {error.info.id}" in error.hint
    stored = make_backend().read()
    assert stored is not None and stored.document.outputs == {"winner": winner}
    assert make_backend().read_lock() is None  # released by the winner


def check_an_unreadable_lock(backend: StateBackend, where: str) -> None:
    """For the backend-specific tests, once they have stored a lock that does not parse (at
    ``where``): it counts as held forever by :data:`UNKNOWN_LOCK_ID`, which force-unlock
    removes."""
    held = backend.read_lock()
    assert held is not None and held.id == UNKNOWN_LOCK_ID
    assert "does not parse" in held.holder and where in held.holder
    assert not held.expired()
    with pytest.raises(LockHeldError) as raised:
        backend.acquire_lock(lock())
    assert raised.value.hint and f"force-unlock {UNKNOWN_LOCK_ID}" in raised.value.hint
    assert backend.force_unlock(UNKNOWN_LOCK_ID).id == UNKNOWN_LOCK_ID
    backend.acquire_lock(lock())

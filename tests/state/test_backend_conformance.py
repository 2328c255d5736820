"""The state backend conformance suite: the contract of :mod:`state.backend`, run on every backend.

Written only against the protocol. To add a backend, add a factory to ``FACTORIES``: it gets the
pytest ``request`` and a fresh ``tmp_path`` and returns a function that makes a new client of one
fresh, empty store (each call another client of the same store, as another process would be).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from state.backend import LockInfo, StateBackend, expiry_after
from state.document import ResourceRecord, StateDocument, to_bytes
from state.errors import LockHeldError, StateConflictError, StateError
from state.local import LocalBackend

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


FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], BackendFactory]] = {
    "local": _local,
    "s3": _s3,
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

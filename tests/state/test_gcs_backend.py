"""What only the GCS backend promises, against the GCS emulator behind the precondition layer
(``gcs_preconditions.py``; the emulator alone ignores ``ifGenerationMatch``): generation
preconditions that lose no update, a retried write told apart from a conflict, a refusal of
endpoints that ignore preconditions, surviving throttling, and readable errors.

The contract itself, and two sessions racing for the lock, are checked by the conformance suite
(``test_backend_conformance.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from state.backend import LockInfo, expiry_after
from state.document import StateDocument, to_bytes
from state.errors import StateConflictError, StateCorruptError, StateError
from state.gcs import GCSBackend
from state.session import StateSession
from tests.checkpoint.servers import GcsServer
from tests.state.test_backend_conformance import check_an_unreadable_lock

KEY = "team/cluster/state.json"
LOCK = f"{KEY}.lock"


def doc(serial: int, lineage: str = "l", **outputs: object) -> StateDocument:
    return StateDocument(lineage=lineage, serial=serial, outputs=dict(outputs))


def names(gcs: GcsServer, bucket: str) -> list[str]:
    return sorted(blob.name for blob in gcs.client().list_blobs(bucket))


def bucket_of(gcs: GcsServer, bucket: str) -> Any:
    return gcs.client().bucket(bucket)


def posts_of(gcs: GcsServer, name: str) -> list[tuple[int, bool]]:
    """(status, answered) of every upload of ``name`` the layer saw."""
    return [(c.status, c.answered) for c in gcs.layer.calls
            if c.method == "POST" and c.object == name]


def test_describe_and_objects(gcs: GcsServer, gcs_bucket: str) -> None:
    backend = GCSBackend(gcs_bucket, KEY)
    assert backend.describe() == f"gs://{gcs_bucket}/{KEY}"
    written = backend.write(doc(1, url="http://x"), expected_version=None)
    backend.acquire_lock(LockInfo.for_operation("apply", 60))
    assert names(gcs, gcs_bucket) == [KEY, LOCK]  # no probe object left behind
    stored = bucket_of(gcs, gcs_bucket).get_blob(KEY)
    assert str(stored.generation) == written
    assert stored.content_type == "application/json"
    assert stored.download_as_bytes() == to_bytes(doc(1, url="http://x"))
    # Every write carried a generation precondition: 0 for the creates.
    uploads = [c.query.get("ifGenerationMatch") for c in gcs.layer.calls if c.method == "POST"
               and c.object in (KEY, LOCK)]
    assert uploads == ["0", "0"]


def test_a_stale_write_is_refused_by_the_store_itself(gcs: GcsServer, gcs_bucket: str) -> None:
    # The backend's own check (the document it last saw) is bypassed: the second writer has
    # not seen the first one's write, so only ifGenerationMatch stands between them.
    first, second = GCSBackend(gcs_bucket, KEY), GCSBackend(gcs_bucket, KEY)
    v1 = first.write(doc(1), expected_version=None)
    assert second.read() is not None
    first.write(doc(2, by="first"), expected_version=v1)
    gcs.layer.reset()
    with pytest.raises(StateConflictError, match="changed since it was read") as lost:
        second.write(doc(2, by="second"), expected_version=v1)
    assert f"(expected generation {v1})" in str(lost.value)
    assert posts_of(gcs, KEY) == [(412, True)]
    stored = first.read()
    assert stored is not None and stored.document == doc(2, by="first")


def test_a_write_whose_answer_was_lost_counts_as_done(gcs: GcsServer, gcs_bucket: str) -> None:
    backend = GCSBackend(gcs_bucket, KEY)
    v1 = backend.write(doc(1), expected_version=None)
    # The upload reaches the store, its answer does not: the client retries it (it carries a
    # generation precondition), the retry is refused by the write itself (412), and the
    # backend reads back its own bytes at a new generation.
    gcs.layer.reset()
    gcs.layer.lose_answer(method="POST", object=KEY)
    v2 = backend.write(doc(2, n=2), expected_version=v1)
    assert posts_of(gcs, KEY) == [(200, False), (412, True)]
    stored = GCSBackend(gcs_bucket, KEY).read()
    assert stored is not None and stored.version == v2 != v1
    assert stored.document == doc(2, n=2)
    # The session goes on from there.
    assert backend.write(doc(3), expected_version=v2)


def test_a_refused_write_that_did_not_land_is_a_conflict(gcs: GcsServer,
                                                         gcs_bucket: str) -> None:
    # Same refusal, but the stored bytes are somebody else's: a real conflict.
    first, second = GCSBackend(gcs_bucket, KEY), GCSBackend(gcs_bucket, KEY)
    v1 = first.write(doc(1), expected_version=None)
    assert second.read() is not None
    first.write(doc(2, by="first"), expected_version=v1)
    gcs.layer.lose_answer(method="POST", object=KEY)  # never reached: the 412 comes first
    with pytest.raises(StateConflictError):
        second.write(doc(2, by="second"), expected_version=v1)


def test_a_lock_create_whose_answer_was_lost_is_ours(gcs: GcsServer, gcs_bucket: str) -> None:
    backend = GCSBackend(gcs_bucket, KEY)
    mine = LockInfo.for_operation("apply", 60)
    gcs.layer.lose_answer(method="POST", object=LOCK)
    backend.acquire_lock(mine)
    assert posts_of(gcs, LOCK) == [(200, False), (412, True)]
    assert GCSBackend(gcs_bucket, KEY).read_lock() == mine
    # Renewal and release lose their answers too, and still do what they should.
    renewed = mine.model_copy(update={"expires_at": expiry_after(300)})
    gcs.layer.lose_answer(method="POST", object=LOCK)
    backend.renew_lock(renewed)
    assert GCSBackend(gcs_bucket, KEY).read_lock() == renewed
    gcs.layer.lose_answer(method="DELETE", object=LOCK)
    backend.release_lock(mine)
    assert backend.read_lock() is None
    deletes = [(c.status < 300, c.answered) for c in gcs.layer.calls
               if c.method == "DELETE" and c.object == LOCK]
    assert deletes == [(True, False), (False, True)]  # deleted unanswered; the retry's 404


def test_an_endpoint_ignoring_preconditions_is_refused(gcs: GcsServer, gcs_bucket: str) -> None:
    bare = gcs.client(gcs.emulator_url)  # the emulator without the layer
    with pytest.raises(StateError, match="does not enforce conditional writes") as refused:
        GCSBackend(gcs_bucket, KEY, client=bare).read()
    assert gcs_bucket in str(refused.value) and "unsafe" in str(refused.value)
    assert "ifGenerationMatch=0" in str(refused.value)
    assert refused.value.hint and "ifGenerationMatch" in refused.value.hint
    with pytest.raises(StateError, match="does not enforce conditional writes"):
        GCSBackend(gcs_bucket, KEY, client=bare).write(doc(1), expected_version=None)
    with pytest.raises(StateError, match="does not enforce conditional writes"):
        with StateSession(GCSBackend(gcs_bucket, KEY, client=bare), operation="apply"):
            pass
    assert names(gcs, gcs_bucket) == []  # no document, no lock, no probe left


def test_throttling_and_server_errors_are_survived(gcs: GcsServer, gcs_bucket: str) -> None:
    backend = GCSBackend(gcs_bucket, KEY)
    gcs.layer.inject(503, method="POST", object=LOCK)
    gcs.layer.inject(429, method="POST", object=KEY)
    with StateSession(backend, operation="apply") as session:
        session.update(lambda d: d.outputs.update(n=1))
        gcs.layer.inject(503, method="GET", object=KEY)
        seen = GCSBackend(gcs_bucket, KEY).read()
        assert seen is not None and seen.document.outputs == {"n": 1}
        session.update(lambda d: d.outputs.update(n=2))
    assert gcs.layer.injected == 3
    stored = GCSBackend(gcs_bucket, KEY).read()
    assert stored is not None and stored.document.outputs == {"n": 2}
    assert stored.document.serial == 2


def test_an_unreadable_lock_counts_as_held_by_unknown(gcs: GcsServer, gcs_bucket: str) -> None:
    bucket_of(gcs, gcs_bucket).blob(LOCK).upload_from_string(b"{not json")
    check_an_unreadable_lock(GCSBackend(gcs_bucket, KEY), f"gs://{gcs_bucket}/{LOCK}")


def test_a_corrupt_document_is_reported(gcs: GcsServer, gcs_bucket: str) -> None:
    bucket_of(gcs, gcs_bucket).blob(KEY).upload_from_string(b'{"format_version": 1, "lin')
    with pytest.raises(StateCorruptError, match="corrupt") as raised:
        GCSBackend(gcs_bucket, KEY).read()
    assert raised.value.hint and "gcloud storage ls --all-versions" in raised.value.hint


def test_a_missing_bucket_is_a_clear_error(gcs: GcsServer) -> None:
    backend = GCSBackend("no-such-bucket-here", KEY)
    with pytest.raises(StateError, match="bucket no-such-bucket-here does not exist") as raised:
        backend.read()
    assert f"gs://no-such-bucket-here/{KEY}" in str(raised.value)
    assert raised.value.hint and \
        "gcloud storage buckets create gs://no-such-bucket-here" in raised.value.hint
    for call in (lambda: backend.acquire_lock(LockInfo.for_operation("apply", 60)),
                 lambda: backend.write(doc(1), expected_version=None),
                 lambda: StateSession(backend, operation="apply").__enter__()):
        with pytest.raises(StateError, match="does not exist"):
            call()


def test_permission_denied_is_a_clear_error(gcs: GcsServer, gcs_bucket: str) -> None:
    gcs.layer.inject(403, method="GET", object=KEY)
    with pytest.raises(StateError, match=f"access denied to gs://{gcs_bucket}/{KEY}") as raised:
        GCSBackend(gcs_bucket, KEY).read()
    assert "injected by the test layer" in str(raised.value)  # the service's own message
    assert "http" not in str(raised.value)  # not the client's URL-and-body dump
    assert raised.value.hint and "storage.objects.create" in raised.value.hint
    gcs.layer.inject(403, method="POST", object=LOCK)
    with pytest.raises(StateError, match=f"access denied to gs://{gcs_bucket}/{LOCK}"):
        GCSBackend(gcs_bucket, KEY).acquire_lock(LockInfo.for_operation("apply", 60))


def test_no_credentials_is_a_clear_error(gcs: GcsServer, gcs_bucket: str, tmp_path,
                                         monkeypatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    with pytest.raises(StateError, match="no usable Google credentials") as raised:
        GCSBackend(gcs_bucket, KEY).read()
    assert f"gs://{gcs_bucket}/{KEY}" in str(raised.value)
    assert raised.value.hint and "gcloud auth application-default login" in raised.value.hint


def test_an_unreachable_endpoint_is_a_clear_error(gcs: GcsServer, gcs_bucket: str,
                                                  monkeypatch) -> None:
    from tests.support import free_ports

    monkeypatch.setattr("state.gcs.RETRY_TIMEOUT_S", 1.0)  # retrying a refused connection
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_ports(1)[0]}")
    with pytest.raises(StateError, match=f"gs://{gcs_bucket}/{KEY}") as raised:
        GCSBackend(gcs_bucket, KEY).read()
    assert raised.value.hint and "STORAGE_EMULATOR_HOST" in raised.value.hint

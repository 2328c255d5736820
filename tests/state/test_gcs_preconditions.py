"""What the GCS emulator lacks and what the precondition layer in front of it adds
(``gcs_preconditions.py``), driven by the real google-cloud-storage client.

If the bare-emulator test fails, gcp-storage-emulator has started enforcing preconditions itself:
good news, and the layer's docstring wants updating.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from google.api_core import exceptions

from tests.checkpoint.servers import GcsServer

KEY = "dir/obj.json"


def bucket_of(client: Any, name: str) -> Any:
    return client.bucket(name)


def upload(bucket: Any, body: bytes, **condition: int) -> int:
    blob = bucket.blob(KEY)
    blob.upload_from_string(body, content_type="application/json", retry=None, **condition)
    return blob.generation


def test_the_bare_emulator_ignores_every_generation_precondition(gcs: GcsServer,
                                                                 gcs_bucket: str) -> None:
    bucket = bucket_of(gcs.client(gcs.emulator_url), gcs_bucket)
    first = upload(bucket, b"1", if_generation_match=0)
    ignored = []
    for what, call in [
        ("create-only upload over an object", lambda: upload(bucket, b"2", if_generation_match=0)),
        ("upload on another generation", lambda: upload(bucket, b"3", if_generation_match=first)),
        ("read on another generation",
         lambda: bucket.blob(KEY).download_as_bytes(if_generation_match=first)),
        ("read with ifGenerationNotMatch of the current one",
         lambda: bucket.blob(KEY).download_as_bytes(
             if_generation_not_match=bucket.get_blob(KEY).generation)),
        ("delete on another generation",
         lambda: bucket.blob(KEY).delete(if_generation_match=first, retry=None)),
    ]:
        try:
            call()
            ignored.append(what)
        except exceptions.GoogleAPICallError:
            pass
    assert len(ignored) == 5, f"the emulator now enforces some preconditions: {ignored}"


def test_the_layer_enforces_generation_preconditions(gcs: GcsServer, gcs_bucket: str) -> None:
    bucket = bucket_of(gcs.client(), gcs_bucket)
    first = upload(bucket, b"1", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed) as refused:
        upload(bucket, b"2", if_generation_match=0)
    assert '"reason": "conditionNotMet"' in str(refused.value)  # Cloud Storage's error body
    second = upload(bucket, b"2", if_generation_match=first)
    assert second > first
    with pytest.raises(exceptions.PreconditionFailed):
        upload(bucket, b"3", if_generation_match=first)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob(KEY).download_as_bytes(if_generation_match=first)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.get_blob(KEY, if_generation_match=first)
    with pytest.raises(exceptions.NotModified):
        bucket.blob(KEY).download_as_bytes(if_generation_not_match=second)
    assert bucket.blob(KEY).download_as_bytes(if_generation_match=second) == b"2"
    assert bucket.blob(KEY).download_as_bytes(if_generation_not_match=first) == b"2"
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob(KEY).delete(if_generation_match=first, retry=None)
    assert bucket.blob(KEY).download_as_bytes() == b"2"
    bucket.blob(KEY).delete(if_generation_match=second, retry=None)
    # A missing object: reads and deletes are 404 whatever the condition; a create holds.
    with pytest.raises(exceptions.NotFound):
        bucket.blob(KEY).download_as_bytes(if_generation_match=second)
    with pytest.raises(exceptions.NotFound):
        bucket.blob(KEY).delete(if_generation_match=second, retry=None)
    with pytest.raises(exceptions.PreconditionFailed):
        upload(bucket, b"4", if_generation_match=second)
    assert upload(bucket, b"4", if_generation_match=0) > second


def test_what_the_layer_cannot_check_is_refused(gcs: GcsServer, gcs_bucket: str) -> None:
    bucket = bucket_of(gcs.client(), gcs_bucket)
    upload(bucket, b"1", if_generation_match=0)
    with pytest.raises(exceptions.GoogleAPICallError) as refused:
        upload(bucket, b"2", if_metageneration_match=1)
    assert refused.value.code == 501 and "ifMetagenerationMatch" in str(refused.value)
    assert bucket.blob(KEY).download_as_bytes() == b"1"


def test_conditional_writes_of_one_object_are_serialised(gcs: GcsServer,
                                                         gcs_bucket: str) -> None:
    clients = [bucket_of(gcs.client(), gcs_bucket) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    outcomes: list[str] = []

    def race(bucket: Any, body: bytes, condition: int) -> None:
        barrier.wait()
        try:
            upload(bucket, body, if_generation_match=condition)
            outcomes.append("written")
        except exceptions.PreconditionFailed:
            outcomes.append("refused")
        except Exception as error:  # noqa: BLE001 - shown by the assertion below
            outcomes.append(repr(error))

    def run_all(condition: int) -> None:
        outcomes.clear()
        threads = [threading.Thread(target=race, args=(bucket, b"%d" % i, condition))
                   for i, bucket in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == ["refused"] * 7 + ["written"]

    run_all(0)  # eight creates: one object
    run_all(clients[0].get_blob(KEY).generation)  # eight updates of one generation: one wins


def test_faults(gcs: GcsServer, gcs_bucket: str) -> None:
    bucket = bucket_of(gcs.client(), gcs_bucket)
    gcs.layer.inject(403, method="GET", object=KEY)
    with pytest.raises(exceptions.Forbidden) as denied:
        bucket.blob(KEY).download_as_bytes()
    assert "injected" in str(denied.value)
    # A lost answer: the upload happened; the client retries it and its own write refuses it.
    gcs.layer.lose_answer(method="POST", object=KEY)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob(KEY).upload_from_string(b"1", if_generation_match=0)
    assert bucket.blob(KEY).download_as_bytes() == b"1"
    posts = [(c.status, c.answered) for c in gcs.layer.calls
             if c.method == "POST" and c.object == KEY]
    assert posts == [(200, False), (412, True)]

"""What only the S3 backend promises, against moto: conditional writes that lose no update, a
refusal of stores that ignore them, the lock race, surviving throttling, and readable errors.

The contract itself is checked by the conformance suite (``test_backend_conformance.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from state.backend import UNKNOWN_LOCK_ID, LockInfo
from state.document import StateDocument, to_bytes
from state.errors import LockHeldError, StateConflictError, StateCorruptError, StateError
from state.s3 import S3Backend
from state.session import StateSession
from tests.aws.faultproxy import FaultProxy

KEY = "team/cluster/state.json"


def doc(serial: int, lineage: str = "l", **outputs: object) -> StateDocument:
    return StateDocument(lineage=lineage, serial=serial, outputs=dict(outputs))


def s3() -> Any:
    import boto3

    return boto3.session.Session().client("s3")


def keys(bucket: str) -> list[str]:
    return [o["Key"] for o in s3().list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def proxy(s3_env: dict[str, str]) -> Iterator[FaultProxy]:
    with FaultProxy(s3_env["AWS_ENDPOINT_URL"]) as running:
        yield running


def test_describe_and_objects(bucket: str) -> None:
    backend = S3Backend(bucket, KEY)
    assert backend.describe() == f"s3://{bucket}/{KEY}"
    written = backend.write(doc(1, url="http://x"), expected_version=None)
    backend.acquire_lock(LockInfo.for_operation("apply", 60))
    assert sorted(keys(bucket)) == [KEY, f"{KEY}.lock"]  # no probe object left behind
    stored = s3().get_object(Bucket=bucket, Key=KEY)
    assert stored["Body"].read() == to_bytes(doc(1, url="http://x"))
    assert stored["ETag"] == written


def test_a_write_with_a_stale_etag_is_refused(bucket: str) -> None:
    S3Backend(bucket, KEY).write(doc(1), expected_version=None)
    first, second = S3Backend(bucket, KEY), S3Backend(bucket, KEY)
    read_first, read_second = first.read(), second.read()
    assert read_first is not None and read_second is not None
    assert read_first.version == read_second.version
    won = first.write(doc(2, by="first"), expected_version=read_first.version)
    with pytest.raises(StateConflictError, match="changed since it was read") as lost:
        second.write(doc(2, by="second"), expected_version=read_second.version)
    assert lost.value.hint and "plan again" in lost.value.hint
    stored = S3Backend(bucket, KEY).read()
    assert stored is not None and stored.version == won
    assert stored.document == doc(2, by="first")


def test_two_first_writes_one_wins(bucket: str) -> None:
    first, second = S3Backend(bucket, KEY), S3Backend(bucket, KEY)
    assert first.read() is None and second.read() is None
    first.write(doc(1, by="first"), expected_version=None)
    with pytest.raises(StateConflictError, match="already exists"):
        second.write(doc(1, by="second"), expected_version=None)
    stored = second.read()
    assert stored is not None and stored.document == doc(1, by="first")


def test_a_retried_write_that_had_landed_is_not_a_conflict(bucket: str) -> None:
    # What a put looks like when its answer was lost and botocore sent it again: the second
    # one is refused by the object the first one wrote.
    version = S3Backend(bucket, KEY).write(doc(1), expected_version=None)
    assert S3Backend(bucket, KEY).write(doc(1), expected_version=None) == version


def test_a_bucket_ignoring_conditional_writes_is_refused(bucket: str, proxy: FaultProxy) -> None:
    proxy.strip_request_headers("If-Match", "If-None-Match")
    backend = S3Backend(bucket, KEY, endpoint_url=proxy.url)
    with pytest.raises(StateError, match="does not enforce conditional writes") as refused:
        backend.read()
    assert bucket in str(refused.value) and "unsafe" in str(refused.value)
    assert refused.value.hint and "conditional writes" in refused.value.hint
    with pytest.raises(StateError, match="does not enforce conditional writes"):
        S3Backend(bucket, KEY, endpoint_url=proxy.url).write(doc(1), expected_version=None)
    with pytest.raises(StateError, match="does not enforce conditional writes"):
        with StateSession(S3Backend(bucket, KEY, endpoint_url=proxy.url), operation="apply"):
            pass
    assert keys(bucket) == []  # no document, no lock, no probe left


def test_the_probe_runs_once_per_backend(bucket: str, proxy: FaultProxy) -> None:
    backend = S3Backend(bucket, KEY, endpoint_url=proxy.url)
    assert backend.read() is None and backend.read() is None
    backend.write(doc(1), expected_version=None)
    probes = [c for c in proxy.calls if ".conditional-write-probe-" in c.path]
    assert [c.method for c in probes] == ["PUT", "PUT", "PUT", "DELETE"]
    assert [c.status for c in probes] == [200, 412, 412, 204]
    assert keys(bucket) == [KEY]


def test_two_sessions_race_for_the_lock(bucket: str) -> None:
    barrier = threading.Barrier(2)
    loser_done = threading.Event()
    results: dict[str, object] = {}

    def run(name: str) -> None:
        backend = S3Backend(bucket, KEY)
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
    stored = S3Backend(bucket, KEY).read()
    assert stored is not None and stored.document.outputs == {"winner": winner}
    assert S3Backend(bucket, KEY).read_lock() is None  # released by the winner


def test_throttling_is_survived(bucket: str, proxy: FaultProxy) -> None:
    backend = S3Backend(bucket, KEY, endpoint_url=proxy.url)
    with StateSession(backend, operation="apply") as session:
        proxy.inject(service="s3", status=503, code="SlowDown")
        session.update(lambda d: d.outputs.update(n=1))
        proxy.inject(service="s3", operation=f"GET /{bucket}/{KEY}.lock", status=503,
                     code="SlowDown")
        session.update(lambda d: d.outputs.update(n=2))
    assert proxy.injected == 2
    stored = S3Backend(bucket, KEY).read()
    assert stored is not None and stored.document.outputs == {"n": 2}
    assert stored.document.serial == 2


def test_an_unreadable_lock_counts_as_held_by_unknown(bucket: str) -> None:
    s3().put_object(Bucket=bucket, Key=f"{KEY}.lock", Body=b"{not json")
    backend = S3Backend(bucket, KEY)
    held = backend.read_lock()
    assert held is not None and held.id == UNKNOWN_LOCK_ID
    assert "does not parse" in held.holder and f"{KEY}.lock" in held.holder
    assert not held.expired()
    with pytest.raises(LockHeldError) as raised:
        backend.acquire_lock(LockInfo.for_operation("apply", 60))
    assert raised.value.hint and f"force-unlock {UNKNOWN_LOCK_ID}" in raised.value.hint
    assert backend.force_unlock(UNKNOWN_LOCK_ID).id == UNKNOWN_LOCK_ID
    backend.acquire_lock(LockInfo.for_operation("apply", 60))


def test_a_corrupt_document_is_reported(bucket: str) -> None:
    s3().put_object(Bucket=bucket, Key=KEY, Body=b'{"format_version": 1, "lin')
    with pytest.raises(StateCorruptError, match="corrupt") as raised:
        S3Backend(bucket, KEY).read()
    assert raised.value.hint and "list-object-versions" in raised.value.hint


def test_a_missing_bucket_is_a_clear_error(s3_env: dict[str, str]) -> None:
    backend = S3Backend("no-such-bucket-here", KEY)
    with pytest.raises(StateError, match="bucket no-such-bucket-here does not exist") as raised:
        backend.read()
    assert raised.value.hint and "aws s3 mb s3://no-such-bucket-here" in raised.value.hint
    with pytest.raises(StateError, match="does not exist"):
        backend.acquire_lock(LockInfo.for_operation("apply", 60))


def test_access_denied_is_a_clear_error(bucket: str, proxy: FaultProxy) -> None:
    proxy.inject(service="s3", status=403, code="AccessDenied")
    with pytest.raises(StateError, match=f"access denied to s3://{bucket}/{KEY}") as raised:
        S3Backend(bucket, KEY, endpoint_url=proxy.url).read()
    assert raised.value.hint and f"arn:aws:s3:::{bucket}/{KEY}*" in raised.value.hint


def test_no_credentials_is_a_clear_error(bucket: str, tmp_path, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StateError, match="no usable AWS credentials") as raised:
        S3Backend(bucket, KEY).read()
    assert f"s3://{bucket}/{KEY}" in str(raised.value)
    assert raised.value.hint and "AWS_PROFILE" in raised.value.hint


def test_an_unreachable_endpoint_is_a_clear_error(bucket: str, monkeypatch) -> None:
    from tests.support import free_ports

    monkeypatch.setattr("state.s3.MAX_ATTEMPTS", 1)  # retrying a refused connection is slow
    backend = S3Backend(bucket, KEY, endpoint_url=f"http://127.0.0.1:{free_ports(1)[0]}")
    with pytest.raises(StateError, match=f"s3://{bucket}/{KEY}") as raised:
        backend.read()
    assert raised.value.hint and "AWS_ENDPOINT_URL" in raised.value.hint

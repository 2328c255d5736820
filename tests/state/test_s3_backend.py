"""What only the S3 backend promises, against moto: conditional writes that lose no update, a
refusal of stores that ignore them, surviving throttling, and readable errors.

The contract itself, and two sessions racing for the lock, are checked by the conformance suite
(``test_backend_conformance.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from state.backend import LockInfo
from state.document import StateDocument, to_bytes
from state.errors import StateCorruptError, StateError
from state.s3 import S3Backend
from state.session import StateSession
from tests.aws.faultproxy import FaultProxy
from tests.state.test_backend_conformance import check_an_unreadable_lock

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
    check_an_unreadable_lock(S3Backend(bucket, KEY), f"s3://{bucket}/{KEY}.lock")


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

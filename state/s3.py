"""The S3 state backend: one object for the document, one for the lock, both written
conditionally.

Implements :class:`state.backend.StateBackend`; see that module for the contract. Objects, for a
state at ``s3://<bucket>/<key>``:

- ``<key>``: the document, canonical bytes (``state.document.to_bytes``). Its version is the
  object's ETag. A write sends ``If-Match: <ETag read>``, the first one ``If-None-Match: *``, so
  S3 itself refuses to overwrite a document somebody else wrote meanwhile (412
  PreconditionFailed, or 409 ConditionalRequestConflict while a concurrent write is in flight):
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
- ``<key>.lock``: the :class:`~state.backend.LockInfo` of the run holding the lock, created with
  ``If-None-Match: *``. An expired lock is taken over, renewed and deleted only with ``If-Match``
  on the ETag just read, so two runs can never both believe they hold it. A lock object that does
  not parse counts as held forever by :data:`~state.backend.UNKNOWN_LOCK_ID`, like the local
  backend's lock file.
- ``<key>.conditional-write-probe-<hex>``: written and deleted once per backend, on first use of
  a state that does not exist yet, to prove that the bucket (or whatever answers at the
  endpoint) enforces conditional writes. Some S3-compatible stores ignore ``If-Match`` and
  ``If-None-Match``; state kept there could be silently overwritten by a concurrent run, so it is
  refused.

Encryption at rest is the bucket's business (default encryption, SSE-KMS); keep the bucket's
versioning on, so an older document can be restored. boto3 is imported on first use, with its
usual credential chain and settings (``AWS_PROFILE``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``...).
Throttling and server errors are retried by botocore's standard retry mode; every other failure
(no bucket, access denied, no credentials, no network) becomes a :class:`~state.errors.StateError`
naming the object and what to do.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from state.backend import LockInfo, Snapshot, unreadable_lock
from state.document import StateDocument, check_successor, parse_document, to_bytes
from state.errors import LockHeldError, StateConflictError, StateCorruptError, StateError

# botocore's standard retry mode retries throttling (SlowDown, 503) and 5xx with exponential
# backoff and jitter; the session above us retries nothing, so give it a few attempts.
# https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html
MAX_ATTEMPTS = 5
# Two runs taking over one expired lock at once: each round, one of them wins the conditional
# put; the loser reads again and sees a live lock. More rounds than this means something odd.
_TAKEOVER_ROUNDS = 5
_CONDITION_FAILED = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_MISSING = frozenset({"NoSuchKey"})
_CREDENTIALS_REJECTED = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId",
})
_WRONG_REGION = frozenset({
    "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
})
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
_NO_SUCH_ETAG = '"' + "0" * 32 + '"'


class _ConditionFailed(Exception):
    """A conditional request found the condition false (412 / 409)."""


class _Missing(Exception):
    """The object does not exist (404 NoSuchKey)."""


class S3Backend:
    """State in an S3 object. See :mod:`state.backend` for the contract and this module's
    docstring for the objects it keeps. ``client``: a boto3 S3 client to use instead of one
    made from ``region`` and ``endpoint_url`` (``None``: boto3's own defaults)."""

    def __init__(self, bucket: str, key: str, *, region: str | None = None,
                 endpoint_url: str | None = None, client: Any = None) -> None:
        if not bucket or not key:
            raise ValueError("bucket and key must not be empty")
        self.bucket = bucket
        self.key = key
        self.lock_key = f"{key}.lock"
        self.region = region
        self.endpoint_url = endpoint_url
        self._client = client
        self._mutex = threading.Lock()  # the client, the probe result, the cache below
        self._conditional_writes_checked = False
        # The document this backend last read or wrote, by its ETag: a write expecting that
        # ETag checks lineage and serial against it instead of reading the object again.
        self._known: tuple[str, StateDocument] | None = None

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    # -- document -------------------------------------------------------------------------

    def read(self) -> Snapshot | None:
        try:
            raw, etag, _ = self._get(self.key, "read")
        except _Missing:
            self._check_conditional_writes()
            return None
        document = self._parse(raw)
        self._remember(etag, document)
        return Snapshot(document=document, version=etag)

    def write(self, document: StateDocument, *, expected_version: str | None) -> str:
        raw = to_bytes(document)
        if expected_version is None:
            self._check_conditional_writes()
            condition = {"IfNoneMatch": "*"}
        else:
            check_successor(self._stored(expected_version), document)
            condition = {"IfMatch": expected_version}
        try:
            etag = self._put(self.key, raw, "write", **condition)
        except (_ConditionFailed, _Missing) as failed:
            etag = self._landed(raw)
            if etag is None:
                raise self._conflict(expected_version, isinstance(failed, _Missing)) from None
        self._remember(etag, document)
        return etag

    def _stored(self, version: str) -> StateDocument:
        """The stored document if its ETag is still ``version``; a conflict otherwise."""
        with self._mutex:
            known = self._known
        if known is not None and known[0] == version:
            return known[1]
        try:
            raw, etag, _ = self._get(self.key, "read", IfMatch=version)
        except (_ConditionFailed, _Missing) as failed:
            raise self._conflict(version, isinstance(failed, _Missing)) from None
        document = self._parse(raw)
        self._remember(etag, document)
        return document

    def _landed(self, raw: bytes) -> str | None:
        """After a refused write: the ETag of the stored object if it holds exactly ``raw``. A
        put whose answer was lost and which botocore retried is refused by its own success."""
        try:
            stored, etag, _ = self._get(self.key, "read")
        except _Missing:
            return None
        return etag if stored == raw else None

    def _conflict(self, expected: str | None, missing: bool) -> StateConflictError:
        hint = "another run wrote the state meanwhile; run plan again"
        where = self.describe()
        if expected is None:
            return StateConflictError(
                f"state already exists at {where}, but this run expected none", hint=hint)
        if missing:
            return StateConflictError(f"state {where} was removed since it was read", hint=hint)
        return StateConflictError(
            f"state {where} changed since it was read (expected ETag {expected})", hint=hint)

    def _parse(self, raw: bytes) -> StateDocument:
        try:
            return parse_document(raw, source=self.describe())
        except StateCorruptError as exc:
            raise StateCorruptError(
                exc.message,
                hint=(f"restore an earlier version of the object (with bucket versioning on: aws "
                      f"s3api list-object-versions --bucket {self.bucket} --prefix {self.key}), "
                      "or inspect it by hand; removing it starts from empty state and forgets "
                      "every resource it recorded"),
            ) from exc

    def _remember(self, etag: str, document: StateDocument) -> None:
        with self._mutex:
            self._known = (etag, document)

    # -- conditional writes probe ---------------------------------------------------------

    def _check_conditional_writes(self) -> None:
        """Once per backend: prove that the store refuses a put with ``If-None-Match: *`` over
        an existing object and one with a wrong ``If-Match``; refuse the bucket otherwise."""
        with self._mutex:
            if self._conditional_writes_checked:
                return
        probe = f"{self.key}.conditional-write-probe-{uuid.uuid4().hex[:12]}"
        ignored: list[str] = []
        try:
            self._put(probe, b"probe\n", "probe", IfNoneMatch="*")
            try:
                self._put(probe, b"probe again\n", "probe", IfNoneMatch="*")
                ignored.append("If-None-Match")
            except _ConditionFailed:
                pass
            try:
                self._put(probe, b"probe again\n", "probe", IfMatch=_NO_SUCH_ETAG)
                ignored.append("If-Match")
            except _ConditionFailed:
                pass
        except _ConditionFailed:
            ignored.append("If-None-Match")  # a fresh random key "exists": nothing holds
        finally:
            self._delete_quietly(probe)
        if ignored:
            raise StateError(
                f"the S3 bucket {self.bucket} (or the endpoint answering for it) does not "
                f"enforce conditional writes: a put with {' and '.join(ignored)} that must "
                f"fail succeeded. State at {self.describe()} would be unsafe there: two runs "
                "could overwrite each other's changes",
                hint="use Amazon S3 or an S3-compatible store that supports conditional writes "
                     "(If-Match / If-None-Match on PutObject), or another state backend",
            )
        with self._mutex:
            self._conditional_writes_checked = True

    def _delete_quietly(self, key: str) -> None:
        try:
            self._call("delete_object", "probe clean-up", Key=key)
        except (StateError, _ConditionFailed, _Missing):
            pass  # a leftover probe object is harmless

    # -- lock -----------------------------------------------------------------------------

    def read_lock(self) -> LockInfo | None:
        found = self._read_lock()
        return None if found is None else found[0]

    def acquire_lock(self, info: LockInfo) -> None:
        body = _lock_bytes(info)
        for _ in range(_TAKEOVER_ROUNDS):
            try:
                self._put(self.lock_key, body, "lock", IfNoneMatch="*")
                return
            except _ConditionFailed:
                pass
            found = self._read_lock()
            if found is None:
                continue  # released meanwhile: try to create it again
            existing, etag = found
            if existing.id == info.id and existing == info:
                return  # our own put landed; botocore retried it after a lost answer
            if not existing.expired():
                raise self._held(existing)
            try:
                self._put(self.lock_key, body, "lock", IfMatch=etag)
                return
            except (_ConditionFailed, _Missing):
                continue  # somebody else took it over or removed it: look again
        found = self._read_lock()
        if found is not None:
            raise self._held(found[0])
        raise LockHeldError(
            f"could not take the lock of {self.describe()}: it kept changing",
            hint="other runs are contending for it; try again",
        )

    def renew_lock(self, info: LockInfo) -> None:
        found = self._read_lock()
        if found is None or found[0].id != info.id:
            raise self._lock_lost(info, None if found is None else found[0])
        existing, etag = found
        renewed = existing.model_copy(update={"expires_at": info.expires_at})
        try:
            self._put(self.lock_key, _lock_bytes(renewed), "lock renewal", IfMatch=etag)
        except (_ConditionFailed, _Missing):
            found = self._read_lock()
            raise self._lock_lost(info, None if found is None else found[0]) from None

    def release_lock(self, info: LockInfo) -> None:
        """Remove the lock if it is still ``info``'s; if absent or taken over, do nothing."""
        found = self._read_lock()
        if found is None or found[0].id != info.id:
            return
        try:
            self._call("delete_object", "lock release", Key=self.lock_key, IfMatch=found[1])
        except (_ConditionFailed, _Missing):
            pass  # taken over or removed since we read it: not ours to remove any more

    def force_unlock(self, lock_id: str) -> LockInfo:
        found = self._read_lock()
        if found is None:
            raise StateError(f"state {self.describe()} is not locked; nothing to unlock")
        existing, etag = found
        if existing.id != lock_id:
            raise StateError(
                f"lock {lock_id} does not hold state {self.describe()}: {existing.describe()}",
                hint=f"to remove that lock: provisioner force-unlock {existing.id}",
            )
        try:
            self._call("delete_object", "force-unlock", Key=self.lock_key, IfMatch=etag)
        except _Missing:
            pass  # gone meanwhile: what was asked is done
        except _ConditionFailed:
            raise StateError(
                f"the lock of {self.describe()} changed while it was being removed",
                hint="look at it again (plan shows the holder) before forcing it",
            ) from None
        return existing

    def _read_lock(self) -> tuple[LockInfo, str] | None:
        try:
            raw, etag, modified = self._get(self.lock_key, "lock read")
        except _Missing:
            return None
        try:
            return LockInfo.model_validate_json(raw), etag
        except (ValidationError, ValueError) as exc:
            where = f"object s3://{self.bucket}/{self.lock_key}"
            return unreadable_lock(where, exc, _timestamp(modified)), etag

    def _held(self, existing: LockInfo) -> LockHeldError:
        return LockHeldError(
            existing.describe(),
            info=existing,
            hint=("wait for it to finish, or if that run is dead: "
                  f"provisioner force-unlock {existing.id}"),
        )

    def _lock_lost(self, info: LockInfo, existing: LockInfo | None) -> LockHeldError:
        now = "nobody holds it now" if existing is None else f"now {existing.describe()}"
        return LockHeldError(
            f"lock lost: lock {info.id} no longer holds state {self.describe()} ({now})",
            info=existing,
            hint="another run may have force-unlocked or taken over the state; run plan again",
        )

    # -- S3 calls -------------------------------------------------------------------------

    def _get(self, key: str, what: str, **condition: str) -> tuple[bytes, str, Any]:
        """Body, ETag and LastModified of ``key``."""
        response = self._call("get_object", what, Key=key, **condition)
        try:
            raw = response["Body"].read()
        except Exception as exc:  # noqa: BLE001 - botocore/urllib3 stream errors vary
            raise StateError(f"reading {self._where(key)} failed: {exc}",
                             hint="check the network and try again") from exc
        return raw, response["ETag"], response.get("LastModified")

    def _put(self, key: str, body: bytes, what: str, **condition: str) -> str:
        response = self._call("put_object", what, Key=key, Body=body,
                              ContentType="application/json", **condition)
        return response["ETag"]

    def _call(self, operation: str, what: str, **params: Any) -> Any:
        """One S3 call; raises :class:`_ConditionFailed`, :class:`_Missing` or a StateError."""
        client = self._s3()
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _CONDITION_FAILED:
                raise _ConditionFailed(code) from exc
            if code in _MISSING:
                raise _Missing(code) from exc
            raise self._client_error(exc, code, what, params.get("Key", self.key)) from exc
        except BotoCoreError as exc:
            raise self._botocore_error(exc, what) from exc

    def _s3(self) -> Any:
        with self._mutex:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError
        except ImportError as exc:
            raise StateError(f"state {self.describe()} needs boto3, which is not installed",
                             hint="pip install boto3") from exc
        config = Config(retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
                        connect_timeout=10, read_timeout=60)
        try:
            # A session per backend: boto3's default session is not safe to share between
            # threads, and this backend is used from the lock-renewal thread too.
            return boto3.session.Session().client(
                "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config)
        except BotoCoreError as exc:
            raise self._botocore_error(exc, "client set-up") from exc

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _client_error(self, exc: Any, code: str, what: str, key: str) -> StateError:
        where = self._where(key)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StateError(
                f"S3 bucket {self.bucket} does not exist (state {self.describe()})",
                hint=(f"create it (aws s3 mb s3://{self.bucket}, with versioning on to keep old "
                      "states), or point the state at an existing bucket"))
        if code in _DENIED or (status == 403 and code not in _CREDENTIALS_REJECTED):
            return StateError(
                f"access denied to {where} ({what}): {code}",
                hint=(f"the AWS identity in use (aws sts get-caller-identity) needs "
                      f"s3:GetObject, s3:PutObject and s3:DeleteObject on "
                      f"arn:aws:s3:::{self.bucket}/{self.key}*"))
        if code in _CREDENTIALS_REJECTED:
            return StateError(
                f"AWS rejected the credentials used for {where}: {code}",
                hint="refresh or fix them (AWS_PROFILE, AWS_ACCESS_KEY_ID and "
                     "AWS_SECRET_ACCESS_KEY, aws sso login)")
        if code in _WRONG_REGION:
            return StateError(
                f"S3 bucket {self.bucket} is in another region than the one used ({code})",
                hint="set the bucket's region for the state (or AWS_REGION)")
        message = exc.response.get("Error", {}).get("Message") or ""
        return StateError(
            f"S3 {what} of {where} failed: {code or status} {message}".rstrip(),
            hint="check the bucket and try again")

    def _botocore_error(self, exc: Exception, what: str) -> StateError:
        from botocore.exceptions import (
            CredentialRetrievalError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(exc, (NoCredentialsError, PartialCredentialsError,
                            CredentialRetrievalError)):
            return StateError(
                f"no usable AWS credentials for the state at {self.describe()}: {exc}",
                hint="configure them the usual way: AWS_PROFILE, AWS_ACCESS_KEY_ID and "
                     "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or an instance role")
        return StateError(
            f"S3 {what} of {self.describe()} failed: {exc}",
            hint="check the network, the region and the endpoint (AWS_ENDPOINT_URL)")


def _lock_bytes(info: LockInfo) -> bytes:
    return (info.model_dump_json(indent=2) + "\n").encode()


def _timestamp(when: Any) -> str:
    if not isinstance(when, datetime):
        when = datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")

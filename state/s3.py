"""The S3 state backend: one object for the document, one for the lock, both written
conditionally.

Implements :class:`state.backend.StateBackend` by way of
:class:`state.objectstore.ObjectStoreBackend`; see those modules for the contract, the objects
kept and how a retried write is told apart from a conflict. Here the version of an object is its
ETag. A write sends ``If-Match: <ETag read>``, the first one ``If-None-Match: *``, so S3 itself
refuses to overwrite a document somebody else wrote meanwhile (412 PreconditionFailed, or 409
ConditionalRequestConflict while a concurrent write is in flight):
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
Some S3-compatible stores ignore ``If-Match`` and ``If-None-Match``; the probe refuses them.

Encryption at rest is the bucket's business (default encryption, SSE-KMS); keep the bucket's
versioning on, so an older document can be restored. boto3 is imported on first use, with its
usual credential chain and settings (``AWS_PROFILE``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``...).
Throttling and server errors are retried by botocore's standard retry mode; every other failure
(no bucket, access denied, no credentials, no network) becomes a :class:`~state.errors.StateError`
naming the object and what to do.
"""

from __future__ import annotations

from typing import Any

from state.errors import StateError
from state.objectstore import ConditionFailed, ObjectMissing, ObjectStoreBackend, StoredObject

# botocore's standard retry mode retries throttling (SlowDown, 503) and 5xx with exponential
# backoff and jitter; the session above us retries nothing, so give it a few attempts.
# https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html
MAX_ATTEMPTS = 5
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


class S3Backend(ObjectStoreBackend):
    """State in an S3 object. See :mod:`state.backend` for the contract and
    :mod:`state.objectstore` for the objects it keeps. ``client``: a boto3 S3 client to use
    instead of one made from ``region`` and ``endpoint_url`` (``None``: boto3's own defaults)."""

    scheme = "s3"
    version_name = "ETag"
    no_such_version = '"' + "0" * 32 + '"'
    condition_names = ("If-None-Match", "If-Match")

    def __init__(self, bucket: str, key: str, *, region: str | None = None,
                 endpoint_url: str | None = None, client: Any = None) -> None:
        super().__init__(bucket, key, client=client)
        self.region = region
        self.endpoint_url = endpoint_url

    def _store_name(self) -> str:
        return f"the S3 bucket {self.bucket} (or the endpoint answering for it)"

    def _unsafe_store_hint(self) -> str:
        return ("use Amazon S3 or an S3-compatible store that supports conditional writes "
                "(If-Match / If-None-Match on PutObject), or another state backend")

    def _restore_hint(self) -> str:
        return (f"with bucket versioning on: aws s3api list-object-versions --bucket "
                f"{self.bucket} --prefix {self.key}")

    # -- S3 calls -------------------------------------------------------------------------

    def _get(self, key: str, what: str, *, version: str | None = None) -> StoredObject:
        condition = {} if version is None else {"IfMatch": version}
        response = self._call("get_object", what, Key=key, **condition)
        try:
            raw = response["Body"].read()
        except Exception as exc:  # noqa: BLE001 - botocore/urllib3 stream errors vary
            raise StateError(f"reading {self._where(key)} failed: {exc}",
                             hint="check the network and try again") from exc
        return StoredObject(raw, response["ETag"], response.get("LastModified"))

    def _put(self, key: str, body: bytes, what: str, *, version: str | None) -> str:
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        response = self._call("put_object", what, Key=key, Body=body,
                              ContentType="application/json", **condition)
        return response["ETag"]

    def _delete(self, key: str, what: str, *, version: str | None) -> None:
        condition = {} if version is None else {"IfMatch": version}
        self._call("delete_object", what, Key=key, **condition)

    def _call(self, operation: str, what: str, **params: Any) -> Any:
        """One S3 call; raises :class:`ConditionFailed`, :class:`ObjectMissing` or a
        StateError."""
        client = self._store_client()
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _CONDITION_FAILED:
                raise ConditionFailed(code) from exc
            if code in _MISSING:
                raise ObjectMissing(code) from exc
            raise self._client_error(exc, code, what, params.get("Key", self.key)) from exc
        except BotoCoreError as exc:
            raise self._botocore_error(exc, what) from exc

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


"""The Google Cloud Storage state backend: one object for the document, one for the lock, both
written conditionally.

Implements :class:`state.backend.StateBackend` by way of
:class:`state.objectstore.ObjectStoreBackend`; see those modules for the contract, the objects
kept and how a retried write is told apart from a conflict. Here the version of an object is its
generation. A write carries ``ifGenerationMatch=<generation read>``, the first one
``ifGenerationMatch=0`` (no live object), so Cloud Storage itself refuses to overwrite a
document somebody else wrote meanwhile (412 conditionNotMet); the lock is deleted with
``ifGenerationMatch`` too: https://cloud.google.com/storage/docs/request-preconditions

A read is two calls: the object's metadata (its generation), then its bytes with
``ifGenerationMatch`` on that generation, so the bytes and the version always belong together
(an object replaced between the two is read again). The bytes alone would do on Cloud Storage,
which names the generation in an ``x-goog-generation`` header, but not every emulator sends it.

google-cloud-storage is imported on first use. It finds Application Default Credentials itself
(``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``, an attached
service account) and honours ``STORAGE_EMULATOR_HOST``. It retries throttling, server errors and
broken connections by itself, writes included since they all carry a generation precondition
(https://cloud.google.com/storage/docs/retry-strategy); every other failure (no bucket,
permission denied, no credentials, no network) becomes a :class:`~state.errors.StateError`
naming the object and what to do. Keep object versioning on for the bucket, so that an older
document can be restored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from state.errors import StateError
from state.objectstore import ConditionFailed, ObjectMissing, ObjectStoreBackend, StoredObject

# How long the client keeps retrying one call (throttling, 5xx, broken connections), and the
# connect and read timeouts of each attempt.
RETRY_TIMEOUT_S = 60.0
_TIMEOUT_S = (10.0, 60.0)
# Reads of an object replaced between its metadata and its bytes, before giving up.
_READ_ROUNDS = 5

T = TypeVar("T")


class GCSBackend(ObjectStoreBackend):
    """State in a Cloud Storage object. See :mod:`state.backend` for the contract and
    :mod:`state.objectstore` for the objects it keeps. ``project``: the project the client is
    made for (object calls need none); ``client``: a ``google.cloud.storage.Client`` to use
    instead of one made from the environment."""

    scheme = "gs"
    version_name = "generation"
    no_such_version = "1"  # generations are timestamps in microseconds
    condition_names = ("ifGenerationMatch=0", "ifGenerationMatch=<generation>")

    def __init__(self, bucket: str, key: str, *, project: str | None = None,
                 client: Any = None) -> None:
        super().__init__(bucket, key, client=client)
        self.project = project

    def _store_name(self) -> str:
        endpoint = os.environ.get("STORAGE_EMULATOR_HOST")
        answering = f": STORAGE_EMULATOR_HOST={endpoint}" if endpoint else ""
        return (f"the Cloud Storage bucket {self.bucket} (or the endpoint answering for "
                f"it{answering})")

    def _unsafe_store_hint(self) -> str:
        return ("use Google Cloud Storage, or an emulator that enforces ifGenerationMatch on "
                "uploads and deletes (gcp-storage-emulator does not), or another state backend")

    def _restore_hint(self) -> str:
        return (f"with object versioning on: gcloud storage ls --all-versions {self.describe()}, "
                f"then gcloud storage cp {self.describe()}#<generation> {self.describe()}")

    # -- Cloud Storage calls --------------------------------------------------------------

    def _get(self, key: str, what: str, *, version: str | None = None) -> StoredObject:
        expected = None if version is None else _generation(version)
        for _ in range(_READ_ROUNDS):
            blob = self._call(what, key, lambda bucket: bucket.get_blob(
                key, if_generation_match=expected, timeout=_TIMEOUT_S, retry=_retry()))
            if blob is None:
                raise ObjectMissing(key)
            try:
                body = self._call(what, key, lambda bucket: bucket.blob(key).download_as_bytes(
                    if_generation_match=blob.generation, timeout=_TIMEOUT_S, retry=_retry()))
            except ConditionFailed:
                if expected is not None:
                    raise
                continue  # replaced between the two calls: read the new one
            return StoredObject(body, str(blob.generation), blob.updated)
        raise StateError(f"{self._where(key)} kept changing while it was being read",
                         hint="other runs are writing it; try again")

    def _put(self, key: str, body: bytes, what: str, *, version: str | None) -> str:
        generation = 0 if version is None else _generation(version)

        def upload(bucket: Any) -> Any:
            blob = bucket.blob(key)
            blob.upload_from_string(body, content_type="application/json",
                                    if_generation_match=generation, timeout=_TIMEOUT_S,
                                    retry=_retry())
            return blob

        return str(self._call(what, key, upload, insert=True).generation)

    def _delete(self, key: str, what: str, *, version: str | None) -> None:
        generation = None if version is None else _generation(version)
        self._call(what, key, lambda bucket: bucket.delete_blob(
            key, if_generation_match=generation, timeout=_TIMEOUT_S, retry=_retry()))

    def _call(self, what: str, key: str, call: Callable[[Any], T], *, insert: bool = False) -> T:
        """``call(bucket)``; raises :class:`ConditionFailed`, :class:`ObjectMissing` or a
        StateError. ``insert``: the call writes an object, so a 404 can only mean that the
        bucket does not exist."""
        client = self._store_client()
        import requests
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth

        try:
            return call(client.bucket(self.bucket))
        except (api.PreconditionFailed, api.NotModified) as exc:
            raise ConditionFailed(str(exc)) from exc
        except api.NotFound as exc:
            if insert:
                raise self._no_bucket() from exc
            raise ObjectMissing(key) from exc
        except api.GoogleAPICallError as exc:
            raise self._api_error(exc, what, key) from exc
        except api.RetryError as exc:
            raise self._unreachable(exc.cause or exc, what) from exc
        except auth.GoogleAuthError as exc:
            raise self._auth_error(exc) from exc
        except requests.RequestException as exc:
            raise self._unreachable(exc, what) from exc

    def _make_client(self) -> Any:
        try:
            from google.auth import exceptions as auth
            from google.cloud import storage
        except ImportError as exc:
            raise StateError(
                f"state {self.describe()} needs google-cloud-storage, which is not installed",
                hint="pip install google-cloud-storage") from exc
        try:
            # project=None: no project, which object calls do not need (the client would
            # otherwise insist on finding one).
            return storage.Client(project=self.project)
        except auth.GoogleAuthError as exc:
            raise self._auth_error(exc) from exc

    # -- errors ---------------------------------------------------------------------------

    def _no_bucket(self) -> StateError:
        return StateError(
            f"Cloud Storage bucket {self.bucket} does not exist (state {self.describe()})",
            hint=(f"create it (gcloud storage buckets create gs://{self.bucket}, then gcloud "
                  f"storage buckets update gs://{self.bucket} --versioning to keep old states), "
                  "or point the state at an existing bucket"))

    def _api_error(self, exc: Any, what: str, key: str) -> StateError:
        where = self._where(key)
        message = _google_message(exc)
        if exc.code == 403:
            return StateError(
                f"access denied to {where} ({what}): {message}".rstrip(),
                hint=(f"the account in use (gcloud auth list) needs storage.objects.get, "
                      f"storage.objects.create and storage.objects.delete on gs://{self.bucket} "
                      "(the role roles/storage.objectUser has them)"))
        if exc.code == 401:
            return StateError(
                f"Google Cloud rejected the credentials used for {where}: {message}".rstrip(),
                hint=_CREDENTIALS_HINT)
        return StateError(
            f"Cloud Storage {what} of {where} failed: {exc.code} {message}".rstrip(),
            hint="check the bucket and try again")

    def _auth_error(self, exc: Exception) -> StateError:
        from google.auth import exceptions as auth

        if isinstance(exc, auth.TransportError):
            return self._unreachable(exc, "sign-in")
        if isinstance(exc, auth.DefaultCredentialsError):
            return StateError(
                f"no usable Google credentials for the state at {self.describe()}: "
                f"{_first_line(exc)}", hint=_CREDENTIALS_HINT)
        return StateError(
            f"Google Cloud rejected the credentials used for {self.describe()}: "
            f"{_first_line(exc)}", hint=_CREDENTIALS_HINT)

    def _unreachable(self, exc: BaseException, what: str) -> StateError:
        return StateError(
            f"Cloud Storage {what} of {self.describe()} failed: {_first_line(exc)}",
            hint="check the network and the endpoint (STORAGE_EMULATOR_HOST, when set, points "
                 "the client at an emulator)")


_CREDENTIALS_HINT = (
    "set up Application Default Credentials: gcloud auth application-default login, "
    "GOOGLE_APPLICATION_CREDENTIALS naming a service account key, or run where a service "
    "account is attached")


def _google_message(exc: Any) -> str:
    """Cloud Storage's own message, from the error's JSON body (the client's message of a
    failed upload or download is the URL followed by the whole body)."""
    try:
        return str(exc.response.json()["error"]["message"])
    except (AttributeError, ValueError, KeyError, TypeError):
        return _first_line(exc.message or "")


def _first_line(error: BaseException | str) -> str:
    text = str(error)
    if not text:
        return "" if isinstance(error, str) else type(error).__name__
    return text.splitlines()[0]


def _generation(version: str) -> int:
    """The generation a version names; a version that names none matches no object."""
    try:
        return int(version)
    except ValueError:
        raise ConditionFailed(f"{version!r} is not a generation") from None


def _retry() -> Any:
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(RETRY_TIMEOUT_S)

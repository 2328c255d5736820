"""State in an object store (S3, GCS): the contract of :mod:`state.backend` written once, over
three conditional object calls that each store's backend implements.

Objects, for a state at ``<scheme>://<bucket>/<key>``:

- ``<key>``: the document, canonical bytes (``state.document.to_bytes``). Its version is the
  store's version of the object (S3: the ETag; GCS: the generation). A write is conditional on
  the version read, the first one on the object being absent, so the store itself refuses to
  overwrite a document somebody else wrote meanwhile.
- ``<key>.lock``: the :class:`~state.backend.LockInfo` of the run holding the lock, created only
  if absent. An expired lock is taken over, renewed and deleted only on the condition that its
  version is still the one just read, so two runs can never both believe they hold it. A lock
  object that does not parse counts as held forever by :data:`~state.backend.UNKNOWN_LOCK_ID`,
  like the local backend's lock file.
- ``<key>.conditional-write-probe-<hex>``: written and deleted once per backend, on first use of
  a state that does not exist yet, to prove that the store (or whatever answers at its endpoint)
  enforces conditional writes. Some S3-compatible stores and GCS emulators ignore them; state
  kept there could be silently overwritten by a concurrent run, so it is refused.

**Lost answers.** The stores' clients retry some failed calls by themselves (botocore's
standard retry mode; google-cloud-storage retries a write that carries a generation
precondition). When the first attempt of a conditional write landed but its answer was lost,
the retry is refused by that very write (412). So a refused write is never a conflict at once:
the object is read back, and if it holds exactly the bytes written, at a version other than the
one the write expected, the write counts as done (:func:`landed`). The lock's create, takeover
and renewal are told apart the same way.
"""

from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar

from pydantic import ValidationError

from state.backend import LockInfo, Snapshot, held_error, lost_error, unreadable_lock
from state.document import StateDocument, check_successor, parse_document, to_bytes
from state.errors import LockHeldError, StateConflictError, StateCorruptError, StateError

# Two runs taking over one expired lock at once: each round, one of them wins the conditional
# put; the loser reads again and sees a live lock. More rounds than this means something odd.
_TAKEOVER_ROUNDS = 5


class ConditionFailed(Exception):
    """A conditional request found its condition false (S3: 412 or 409; GCS: 412)."""


class ObjectMissing(Exception):
    """The object does not exist (404)."""


@dataclass(frozen=True)
class StoredObject:
    """An object as read: its bytes, its version and when it was last written (if known)."""

    body: bytes
    version: str
    modified: datetime | None = None


def landed(stored: StoredObject | None, body: bytes, expected: str | None) -> bool:
    """Whether a conditional write of ``body`` that was refused had in fact landed: the object
    read back after the refusal holds exactly ``body``, at a newer version than ``expected``
    (the version the write was conditional on; None: the object was to be absent)."""
    return stored is not None and stored.body == body and stored.version != expected


class ObjectStoreBackend(ABC):
    """The state contract on an object store. Subclasses implement :meth:`_get`, :meth:`_put`
    and :meth:`_delete` (each raising :class:`ConditionFailed`, :class:`ObjectMissing` or a
    :class:`~state.errors.StateError`), and say how their store names things."""

    scheme: ClassVar[str]  # of the URIs: "s3", "gs"
    version_name: ClassVar[str]  # what the store calls a version: "ETag", "generation"
    no_such_version: ClassVar[str]  # a version no object ever has (for the probe)
    # How the store names the create-only condition and the version condition (for messages).
    condition_names: ClassVar[tuple[str, str]]

    def __init__(self, bucket: str, key: str, *, client: Any = None) -> None:
        if not bucket or not key:
            raise ValueError("bucket and key must not be empty")
        self.bucket = bucket
        self.key = key
        self.lock_key = f"{key}.lock"
        self._client = client
        self._mutex = threading.Lock()  # the client, the probe result, the cache below
        self._conditional_writes_checked = False
        # The document this backend last read or wrote, by its version: a write expecting that
        # version checks lineage and serial against it instead of reading the object again.
        self._known: tuple[str, StateDocument] | None = None

    def describe(self) -> str:
        return self._where(self.key)

    def _where(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"

    def _store_client(self) -> Any:
        """The store's client, made on first use (the SDK is imported only then)."""
        with self._mutex:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    # -- what each store implements -------------------------------------------------------

    @abstractmethod
    def _make_client(self) -> Any:
        """A client of the store; a StateError naming what is missing if none can be made."""

    @abstractmethod
    def _get(self, key: str, what: str, *, version: str | None = None) -> StoredObject:
        """``key`` as stored; only if its version is ``version`` (None: whatever it is)."""

    @abstractmethod
    def _put(self, key: str, body: bytes, what: str, *, version: str | None) -> str:
        """Store ``body`` under ``key`` only if its version is ``version`` (None: only if there
        is no such object); return the new version."""

    @abstractmethod
    def _delete(self, key: str, what: str, *, version: str | None) -> None:
        """Remove ``key`` only if its version is ``version`` (None: whatever it is)."""

    @abstractmethod
    def _store_name(self) -> str:
        """The store, for messages: "the S3 bucket b (or the endpoint answering for it)"."""

    @abstractmethod
    def _unsafe_store_hint(self) -> str:
        """What to do about a store that ignores conditional writes."""

    @abstractmethod
    def _restore_hint(self) -> str:
        """How to get an earlier version of the document back."""

    # -- document -------------------------------------------------------------------------

    def read(self) -> Snapshot | None:
        try:
            stored = self._get(self.key, "read")
        except ObjectMissing:
            self._check_conditional_writes()
            return None
        document = self._parse(stored.body)
        self._remember(stored.version, document)
        return Snapshot(document=document, version=stored.version)

    def write(self, document: StateDocument, *, expected_version: str | None) -> str:
        raw = to_bytes(document)
        if expected_version is None:
            self._check_conditional_writes()
        else:
            check_successor(self._stored(expected_version), document)
        try:
            version = self._put(self.key, raw, "write", version=expected_version)
        except (ConditionFailed, ObjectMissing):
            stored = self._current(self.key)
            if not landed(stored, raw, expected_version):
                raise self._conflict(expected_version, stored is None) from None
            assert stored is not None
            version = stored.version
        self._remember(version, document)
        return version

    def _stored(self, version: str) -> StateDocument:
        """The stored document if its version is still ``version``; a conflict otherwise."""
        with self._mutex:
            known = self._known
        if known is not None and known[0] == version:
            return known[1]
        try:
            stored = self._get(self.key, "read", version=version)
        except (ConditionFailed, ObjectMissing) as failed:
            raise self._conflict(version, isinstance(failed, ObjectMissing)) from None
        document = self._parse(stored.body)
        self._remember(stored.version, document)
        return document

    def _current(self, key: str) -> StoredObject | None:
        try:
            return self._get(key, "read")
        except ObjectMissing:
            return None

    def _conflict(self, expected: str | None, missing: bool) -> StateConflictError:
        hint = "another run wrote the state meanwhile; run plan again"
        where = self.describe()
        if expected is None:
            return StateConflictError(
                f"state already exists at {where}, but this run expected none", hint=hint)
        if missing:
            return StateConflictError(f"state {where} was removed since it was read", hint=hint)
        return StateConflictError(
            f"state {where} changed since it was read (expected {self.version_name} "
            f"{expected})", hint=hint)

    def _parse(self, raw: bytes) -> StateDocument:
        try:
            return parse_document(raw, source=self.describe())
        except StateCorruptError as exc:
            raise StateCorruptError(
                exc.message,
                hint=(f"restore an earlier version of the object ({self._restore_hint()}), or "
                      "inspect it by hand; removing it starts from empty state and forgets "
                      "every resource it recorded"),
            ) from exc

    def _remember(self, version: str, document: StateDocument) -> None:
        with self._mutex:
            self._known = (version, document)

    # -- conditional writes probe ---------------------------------------------------------

    def _check_conditional_writes(self) -> None:
        """Once per backend: prove that the store refuses a create-only put over an existing
        object and a put expecting a version the object does not have; refuse it otherwise."""
        with self._mutex:
            if self._conditional_writes_checked:
                return
        probe = f"{self.key}.conditional-write-probe-{uuid.uuid4().hex[:12]}"
        create_only, matching = self.condition_names
        ignored: list[str] = []
        try:
            self._put(probe, b"probe\n", "probe", version=None)
            try:
                self._put(probe, b"probe again\n", "probe", version=None)
                ignored.append(create_only)
            except ConditionFailed:
                pass
            try:
                self._put(probe, b"probe again\n", "probe", version=self.no_such_version)
                ignored.append(matching)
            except ConditionFailed:
                pass
        except ConditionFailed:
            ignored.append(create_only)  # a fresh random key "exists": nothing holds
        finally:
            self._delete_quietly(probe)
        if ignored:
            raise StateError(
                f"{self._store_name()} does not enforce conditional writes: a put with "
                f"{' and '.join(ignored)} that must fail succeeded. State at "
                f"{self.describe()} would be unsafe there: two runs could overwrite each "
                "other's changes",
                hint=self._unsafe_store_hint(),
            )
        with self._mutex:
            self._conditional_writes_checked = True

    def _delete_quietly(self, key: str) -> None:
        try:
            self._delete(key, "probe clean-up", version=None)
        except (StateError, ConditionFailed, ObjectMissing):
            pass  # a leftover probe object is harmless

    # -- lock -----------------------------------------------------------------------------

    def read_lock(self) -> LockInfo | None:
        found = self._read_lock()
        return None if found is None else found[0]

    def acquire_lock(self, info: LockInfo) -> None:
        body = lock_bytes(info)
        for _ in range(_TAKEOVER_ROUNDS):
            try:
                self._put(self.lock_key, body, "lock", version=None)
                return
            except ConditionFailed:
                pass
            found = self._read_lock()
            if found is None:
                continue  # released meanwhile: try to create it again
            existing, stored = found
            if landed(stored, body, None):
                return  # our own create (or takeover) landed; its answer was lost
            if not existing.expired():
                raise held_error(existing)
            try:
                self._put(self.lock_key, body, "lock", version=stored.version)
                return
            except (ConditionFailed, ObjectMissing):
                continue  # somebody else took it over or removed it: look again
        found = self._read_lock()
        if found is not None:
            raise held_error(found[0])
        raise LockHeldError(
            f"could not take the lock of {self.describe()}: it kept changing",
            hint="other runs are contending for it; try again",
        )

    def renew_lock(self, info: LockInfo) -> None:
        found = self._read_lock()
        if found is None or found[0].id != info.id:
            raise lost_error(info, None if found is None else found[0], self.describe())
        existing, stored = found
        body = lock_bytes(existing.model_copy(update={"expires_at": info.expires_at}))
        try:
            self._put(self.lock_key, body, "lock renewal", version=stored.version)
        except (ConditionFailed, ObjectMissing):
            again = self._read_lock()
            if again is not None and landed(again[1], body, stored.version):
                return  # the renewal landed; its answer was lost
            raise lost_error(info, None if again is None else again[0],
                             self.describe()) from None

    def release_lock(self, info: LockInfo) -> None:
        """Remove the lock if it is still ``info``'s; if absent or taken over, do nothing."""
        found = self._read_lock()
        if found is None or found[0].id != info.id:
            return
        try:
            self._delete(self.lock_key, "lock release", version=found[1].version)
        except (ConditionFailed, ObjectMissing):
            pass  # taken over or removed since we read it: not ours to remove any more

    def force_unlock(self, lock_id: str) -> LockInfo:
        found = self._read_lock()
        if found is None:
            raise StateError(f"state {self.describe()} is not locked; nothing to unlock")
        existing, stored = found
        if existing.id != lock_id:
            raise StateError(
                f"lock {lock_id} does not hold state {self.describe()}: {existing.describe()}",
                hint=f"to remove that lock: provisioner force-unlock {existing.id}",
            )
        try:
            self._delete(self.lock_key, "force-unlock", version=stored.version)
        except ObjectMissing:
            pass  # gone meanwhile: what was asked is done
        except ConditionFailed:
            raise StateError(
                f"the lock of {self.describe()} changed while it was being removed",
                hint="look at it again (plan shows the holder) before forcing it",
            ) from None
        return existing

    def _read_lock(self) -> tuple[LockInfo, StoredObject] | None:
        try:
            stored = self._get(self.lock_key, "lock read")
        except ObjectMissing:
            return None
        try:
            return LockInfo.model_validate_json(stored.body), stored
        except (ValidationError, ValueError) as exc:
            where = f"object {self._where(self.lock_key)}"
            return unreadable_lock(where, exc, _timestamp(stored.modified)), stored


def lock_bytes(info: LockInfo) -> bytes:
    return (info.model_dump_json(indent=2) + "\n").encode()


def _timestamp(when: datetime | None) -> str:
    if not isinstance(when, datetime):
        when = datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")

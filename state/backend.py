"""The contract every state backend implements (local file, S3, GCS).

A backend stores one document and one lock object. Both are written conditionally:

- ``read()`` returns the document with an opaque ``version`` (local: digest of the bytes; S3: the
  ETag; GCS: the generation).
- ``write(doc, expected_version)`` stores ``doc`` only if the stored version still equals
  ``expected_version`` (``None``: only if nothing is stored yet, S3 ``If-None-Match: *``, GCS
  ``ifGenerationMatch=0``) and raises :class:`~state.errors.StateConflictError` otherwise. It
  also refuses a document of another lineage or a serial that does not follow the stored one.
  Writes are atomic: a reader sees the old or the new document, never a mix.
- The lock is an object holding a :class:`LockInfo`. ``acquire_lock`` creates it only if absent
  or expired (create-if-absent: ``O_EXCL``, ``If-None-Match``, ``ifGenerationMatch=0``) and raises
  :class:`~state.errors.LockHeldError` carrying the holder's info otherwise; ``renew_lock`` pushes
  the expiry out and fails if the lock is no longer ours; ``release_lock`` removes it only if it is
  still ours; ``force_unlock`` removes it when its id matches, whoever holds it. A lock object
  that does not parse counts as held, never expiring, by :data:`UNKNOWN_LOCK_ID`
  (:func:`unreadable_lock`), so ``force_unlock("unknown")`` removes it.

Backends do no retrying and hold no lock across calls: :class:`state.session.StateSession`
builds the locked, renewed, compare-and-swap session on top. One conformance suite
(``tests/state/test_backend_conformance.py``) runs against every backend.
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from state.document import StateDocument, utcnow
from state.errors import LockHeldError


@dataclass(frozen=True)
class Snapshot:
    document: StateDocument
    version: str


def default_holder() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class LockInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    holder: str = Field(default_factory=default_holder)
    operation: str
    created_at: str = Field(default_factory=utcnow)
    expires_at: str

    @classmethod
    def for_operation(cls, operation: str, ttl_s: float) -> "LockInfo":
        return cls(operation=operation, expires_at=expiry_after(ttl_s))

    def expired(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(timezone.utc)
        return parse_time(self.expires_at) <= now

    def describe(self) -> str:
        return (
            f"lock {self.id} held by {self.holder} for '{self.operation}' "
            f"since {self.created_at} (expires {self.expires_at})"
        )


# A lock object that does not parse is not ignored (that would let two runs in): it counts as
# held, forever, by a lock of this id, and ``force_unlock(UNKNOWN_LOCK_ID)`` removes it.
UNKNOWN_LOCK_ID = "unknown"
_NEVER = "9999-12-31T23:59:59.999Z"


def unreadable_lock(where: str, error: Exception, created_at: str) -> LockInfo:
    """The :class:`LockInfo` a lock object at ``where`` that does not parse counts as."""
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return LockInfo(
        id=UNKNOWN_LOCK_ID,
        holder=f"unknown (lock {where} does not parse: {first_line})",
        operation="unknown",
        created_at=created_at,
        expires_at=_NEVER,
    )


def held_error(existing: LockInfo) -> LockHeldError:
    """The error for a lock that another run holds: who, and how to get past it."""
    return LockHeldError(
        existing.describe(),
        info=existing,
        hint=("wait for it to finish, or if that run is dead: "
              f"provisioner force-unlock {existing.id}"),
    )


def lost_error(info: LockInfo, existing: LockInfo | None, where: str) -> LockHeldError:
    """The error for a lock ``info`` that no longer holds the state at ``where``."""
    now = "nobody holds it now" if existing is None else f"now {existing.describe()}"
    return LockHeldError(
        f"lock lost: lock {info.id} no longer holds state {where} ({now})",
        info=existing,
        hint="another run may have force-unlocked or taken over the state; run plan again",
    )


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expiry_after(ttl_s: float) -> str:
    when = datetime.now(timezone.utc) + timedelta(seconds=ttl_s)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@runtime_checkable
class StateBackend(Protocol):
    """See the module docstring for the contract."""

    def describe(self) -> str:
        """Where the state lives, for messages ("local file ./.provisioner/state.json")."""
        ...

    def read(self) -> Snapshot | None: ...

    def write(self, document: StateDocument, *, expected_version: str | None) -> str:
        """Store ``document`` if the stored version is ``expected_version``; return the new one."""
        ...

    def read_lock(self) -> LockInfo | None: ...

    def acquire_lock(self, info: LockInfo) -> None: ...

    def renew_lock(self, info: LockInfo) -> None: ...

    def release_lock(self, info: LockInfo) -> None: ...

    def force_unlock(self, lock_id: str) -> LockInfo: ...

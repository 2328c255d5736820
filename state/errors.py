"""Errors of the state package. ``provisioner.errors`` re-exports them."""

from __future__ import annotations


class StateError(Exception):
    """Root of state errors. ``hint`` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class StateCorruptError(StateError):
    """The stored document does not parse; ``backup`` names the newest usable backup, if any."""

    def __init__(self, message: str, *, backup: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.backup = backup


class StateConflictError(StateError):
    """A conditional write lost: the document changed since it was read, or the successor
    has another lineage or does not follow the stored serial."""


class LockHeldError(StateError):
    """The lock is held by someone else. Retryable; ``info`` is the holder's LockInfo."""

    def __init__(self, message: str, *, info=None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.info = info

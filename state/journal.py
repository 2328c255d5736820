"""The journal of pending operations, as pure helpers over a :class:`StateDocument`.

Before a provider call that changes the world, the apply engine records the operation
(``begin``) and persists it; after the call it records the result and clears the entry
(``finish``) in the same write. A later run resolves what it finds (``pending_by_token``): adopt
what exists (found by token), clear what does not. These helpers only edit the document; they
are meant to run inside ``StateSession.update``::

    session.update(lambda doc: journal.begin(doc, op))
"""

from __future__ import annotations

from state.document import PendingOperation, StateDocument


def begin(doc: StateDocument, operation: PendingOperation) -> None:
    """Record ``operation`` as pending. Tokens are unique: a second entry for one is a bug."""
    if any(entry.token == operation.token for entry in doc.pending):
        raise ValueError(f"journal already holds an operation with token {operation.token}")
    doc.pending.append(operation)


def finish(doc: StateDocument, token: str) -> PendingOperation | None:
    """Clear the entry of ``token`` and return it; None if there is none (already resolved)."""
    for index, entry in enumerate(doc.pending):
        if entry.token == token:
            return doc.pending.pop(index)
    return None


def pending_by_token(doc: StateDocument) -> dict[str, PendingOperation]:
    return {entry.token: entry for entry in doc.pending}

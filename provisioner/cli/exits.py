"""Exit codes, decided here and nowhere else.

| code | meaning |
|------|---------|
| 0 | success (with ``--detailed-exitcode``: success and no changes) |
| 1 | error: bad input, failed change, stale plan, refused approval, interrupted apply |
| 2 | with ``--detailed-exitcode``: success and there are changes |
| 3 | the state is locked by another run (retry later, or ``force-unlock``) |
| 4 | ``recover``: no usable checkpoint (missing, corrupt, other lineage); nothing changed |
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback

from provisioner.errors import LockHeldError, ProvisionerError
from state.errors import StateError

OK = 0
ERROR = 1
CHANGES = 2
LOCKED = 3
NO_CHECKPOINT = 4


def code_for(error: BaseException) -> int:
    if isinstance(error, LockHeldError):
        return LOCKED
    return getattr(error, "exit_code", ERROR)


def is_known(error: BaseException) -> bool:
    return isinstance(error, (ProvisionerError, StateError))


def describe(error: BaseException) -> tuple[str, str | None]:
    """(message, hint) for a known error."""
    if isinstance(error, (ProvisionerError, StateError)):
        return str(error), getattr(error, "hint", None)
    return str(error), None


def write_crash_log(error: BaseException) -> str:
    """An unexpected exception is a bug: keep the traceback for the report, say where."""
    directory = os.environ.get("PROVISIONER_LOG_DIR") or tempfile.gettempdir()
    path = os.path.join(directory, f"provisioner-crash-{time.strftime('%Y%m%d-%H%M%S')}.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(traceback.format_exception(error)))
    return path

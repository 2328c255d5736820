"""The exception tree of provisioner.

Every error a user can cause or meet derives from :class:`ProvisionerError`. Code below the CLI
raises these; only the CLI turns them into messages and exit codes (see ``provisioner.cli.exits``).
An exception that is not a ``ProvisionerError`` is a bug: the CLI writes a debug log for it.

State and lock errors live in the ``state`` package (which must not import provisioner); they are
re-exported here so callers have one place to look.
"""

from __future__ import annotations

from state.errors import (  # noqa: F401  (re-exported)
    LockHeldError,
    StateConflictError,
    StateCorruptError,
    StateError,
)


class ProvisionerError(Exception):
    """Root of every error provisioner reports to a user.

    ``hint`` says what to do about it, when there is something to do.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class SpecError(ProvisionerError):
    """The spec, a variable or a manifest is invalid. ``source`` names the file, ``path`` the key."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.source = source
        self.path = path

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.source, self.path) if p)
        return f"{where}: {self.message}" if where else self.message


class GraphError(SpecError):
    """Unknown reference or dependency cycle among resources."""


class PlanError(ProvisionerError):
    """A saved plan cannot be used (stale, corrupt, made for other variables)."""


class ProviderError(ProvisionerError):
    """A provider call failed. ``address`` names the resource when there is one."""

    def __init__(self, message: str, *, address: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.address = address


class TransientProviderError(ProviderError):
    """A failure worth retrying (throttling, a 5xx, a connection reset)."""


class ServeError(ProviderError):
    """A Serve application failed to deploy or the dashboard refused it."""


class ApplyFailed(ProvisionerError):
    """Apply finished with failed changes; the summary is in ``failures`` (address -> message)."""

    def __init__(self, failures: dict[str, str], *, interrupted: bool = False) -> None:
        what = "interrupted" if interrupted else f"{len(failures)} change(s) failed"
        super().__init__(f"apply {what}")
        self.failures = failures
        self.interrupted = interrupted


class NotApproved(ProvisionerError):
    """Apply or destroy needs approval and none can be asked for (no terminal) or it was declined."""

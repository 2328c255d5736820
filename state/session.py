"""A locked, renewed, compare-and-swap session over a :class:`~state.backend.StateBackend`.

Backends only offer single conditional calls; a run needs more: hold the lock for its whole
length (renewed in the background so a long apply does not lose it, expiring on its own if the
run dies), read the document once, then persist every change as it happens, safely from many
apply worker threads at once.

Writes use *group commit*: a change is applied, under a mutex, to the pending successor
document; one thread (the first waiting caller) writes the pending document with
compare-and-swap on the version it last read or wrote, while the others wait. Changes made
during that write are gathered for the next one. So each durable write bumps the serial by
exactly one and holds every change made before it started, callers return only when their
change is durable, and N concurrent changes cost far fewer than N writes.

A failed write ends the session's ability to write: after a
:class:`~state.errors.StateConflictError` somebody else wrote (retrying blindly would overwrite
them), and after any other error we do not know what is stored. Every caller whose change was
not yet durable, and every later ``update``, gets that error. Likewise once the lock is lost
(renewal refused, or its expiry passed without a successful renewal) ``update`` raises
:class:`~state.errors.LockHeldError`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from types import TracebackType

from state.backend import LockInfo, StateBackend, expiry_after
from state.document import StateDocument
from state.errors import LockHeldError

# Waits between lock attempts grow from this to the cap, each scaled by a random factor so that
# runs waiting on the same lock do not retry in step.
_BACKOFF_INITIAL_S = 0.05
_BACKOFF_CAP_S = 5.0


class StateSession:
    """Use as a context manager::

        with StateSession(backend, operation="apply", lock_timeout=30) as session:
            doc = session.document
            session.update(lambda d: d.outputs.update(url=url))

    ``lock_timeout``: seconds to keep retrying a held lock (0 = one try), calling
    ``on_wait(holder)`` before each wait. ``lock_ttl``: the lock's lifetime; it is renewed every
    third of it. ``lock=False``: no lock at all (read-only use, or tests); writes are still
    compare-and-swap.
    """

    def __init__(
        self,
        backend: StateBackend,
        *,
        operation: str,
        lock_timeout: float = 0.0,
        lock_ttl: float = 60.0,
        on_wait: Callable[[LockInfo], None] | None = None,
        lock: bool = True,
    ) -> None:
        if lock_ttl <= 0:
            raise ValueError("lock_ttl must be positive")
        self.backend = backend
        self.operation = operation
        self.lock_timeout = lock_timeout
        self.lock_ttl = lock_ttl
        self.on_wait = on_wait
        self.use_lock = lock
        self.lock_info: LockInfo | None = None
        self.lock_lost = False
        self._lock_lost_reason: LockHeldError | None = None
        # Monotonic time until which the lock is known to be ours (start of the last
        # successful acquire/renew call plus the ttl).
        self._lock_valid_until = 0.0
        self._stop_renewal = threading.Event()
        self._renewal: threading.Thread | None = None

        self._cond = threading.Condition(threading.Lock())
        self._entered = False
        self._persisted: StateDocument | None = None
        self._version: str | None = None
        self._inflight: StateDocument | None = None  # being written by the flushing thread
        self._pending: StateDocument | None = None  # changes not yet in any write
        self._applied = 0  # tickets: count of changes applied so far
        self._durable = 0  # highest ticket included in a durable write
        self._flushing = False
        self._failure: BaseException | None = None

    # -- convenience ----------------------------------------------------------------------

    @staticmethod
    def read_only(backend: StateBackend) -> StateDocument | None:
        """The stored document, or None; no lock (for show, output, plan -lock=false)."""
        snapshot = backend.read()
        return None if snapshot is None else snapshot.document

    @property
    def document(self) -> StateDocument:
        """The latest persisted document (or a new, unwritten one). Treat it as read-only."""
        with self._cond:
            if self._persisted is None:
                raise RuntimeError("StateSession is not entered")
            return self._persisted

    @property
    def version(self) -> str | None:
        """Backend version of :attr:`document`; None while nothing is stored."""
        with self._cond:
            return self._version

    # -- enter / exit ---------------------------------------------------------------------

    def __enter__(self) -> "StateSession":
        if self._entered:
            raise RuntimeError("StateSession is not reentrant")
        if self.use_lock:
            self._acquire()
            self._start_renewal()
        try:
            snapshot = self.backend.read()
        except BaseException:
            self._unlock()
            raise
        if snapshot is None:
            self._persisted, self._version = StateDocument.new(), None
        else:
            self._persisted, self._version = snapshot.document, snapshot.version
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        try:
            self._unlock()
        except Exception as release_error:
            if exc is None:
                raise
            # The body's error is the one to report; a lock left behind expires by itself.
            exc.add_note(f"also failed to release the state lock: {release_error}")

    def _unlock(self) -> None:
        self._stop_renewal.set()
        if self._renewal is not None:
            self._renewal.join(timeout=self.lock_ttl)
            self._renewal = None
        if self.lock_info is not None:
            info, self.lock_info = self.lock_info, None
            self.backend.release_lock(info)

    # -- lock -----------------------------------------------------------------------------

    def _acquire(self) -> None:
        lock_id = LockInfo.for_operation(self.operation, self.lock_ttl).id
        deadline = time.monotonic() + self.lock_timeout
        attempt = 0
        while True:
            # A fresh expiry per attempt: the time spent waiting must not shorten the lease.
            info = LockInfo.for_operation(self.operation, self.lock_ttl)
            info = info.model_copy(update={"id": lock_id})
            started = time.monotonic()
            try:
                self.backend.acquire_lock(info)
            except LockHeldError as held:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                if self.on_wait is not None and held.info is not None:
                    self.on_wait(held.info)
                delay = min(_BACKOFF_CAP_S, _BACKOFF_INITIAL_S * 2**attempt)
                time.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))
                attempt += 1
                continue
            self.lock_info = info
            self._lock_valid_until = started + self.lock_ttl
            return

    def _start_renewal(self) -> None:
        self._stop_renewal.clear()
        self._renewal = threading.Thread(
            target=self._renew_loop, name=f"state-lock-renewal-{self.operation}", daemon=True
        )
        self._renewal.start()

    def _renew_loop(self) -> None:
        interval = self.lock_ttl / 3
        while not self._stop_renewal.wait(interval):
            info = self.lock_info
            if info is None:
                return
            renewed = info.model_copy(update={"expires_at": expiry_after(self.lock_ttl)})
            started = time.monotonic()
            try:
                self.backend.renew_lock(renewed)
            except LockHeldError as lost:
                self._mark_lock_lost(lost)
                return
            except Exception as error:  # noqa: BLE001 - transient: retried on the next tick
                if time.monotonic() >= self._lock_valid_until:
                    self._mark_lock_lost(
                        LockHeldError(f"lock lost: it expired while renewal failed: {error}")
                    )
                    return
                continue
            self.lock_info = renewed
            self._lock_valid_until = started + self.lock_ttl

    def _mark_lock_lost(self, reason: LockHeldError) -> None:
        self._lock_lost_reason = reason
        self.lock_lost = True

    def _check_lock(self) -> None:
        if not self.use_lock:
            return
        if not self.lock_lost and time.monotonic() >= self._lock_valid_until:
            self._mark_lock_lost(
                LockHeldError(
                    f"lock lost: lock {self.lock_info.id if self.lock_info else '?'} expired "
                    "before it could be renewed"
                )
            )
        if self.lock_lost:
            reason = self._lock_lost_reason
            raise LockHeldError(
                reason.message if reason else "lock lost",
                info=reason.info if reason else None,
                hint="another run may own the state now; nothing more was written. Run plan again",
            )

    # -- writes ---------------------------------------------------------------------------

    def update(self, change: Callable[[StateDocument], None]) -> StateDocument:
        """Apply ``change`` to the next document and return once a write holding it is durable.

        Returns the document that write stored (read-only). ``change`` runs under the session's
        mutex, so it must be quick and must not call ``update``. If it raises, nothing of it
        is kept and the error propagates.
        """
        with self._cond:
            self._check_writable()
            self._pending = self._apply(change)
            self._applied += 1
            ticket = self._applied
            while self._durable < ticket:
                if self._failure is not None:
                    raise self._failure
                if self._flushing:
                    self._cond.wait()
                else:
                    self._flush()
            assert self._persisted is not None
            return self._persisted

    def _check_writable(self) -> None:
        if not self._entered:
            raise RuntimeError("StateSession is not entered")
        if self._failure is not None:
            raise self._failure
        self._check_lock()

    def _apply(self, change: Callable[[StateDocument], None]) -> StateDocument:
        # Changes are made on a copy of the containers (records are shared and replaced, never
        # mutated; see StateDocument.successor), so one that raises half way leaves nothing.
        base = self._pending
        if base is None:
            latest = self._inflight or self._persisted
            assert latest is not None
            candidate = latest.successor()
        else:
            candidate = base.successor()
            candidate.serial = base.serial
        serial, lineage = candidate.serial, candidate.lineage
        change(candidate)
        if (candidate.serial, candidate.lineage) != (serial, lineage):
            raise ValueError("a state change must not modify serial or lineage")
        return candidate

    def _flush(self) -> None:
        """Write every pending change (called holding the mutex; releases it while writing)."""
        document, self._pending, self._inflight = self._pending, None, self._pending
        assert document is not None
        through, expected = self._applied, self._version
        self._flushing = True
        try:
            self._check_lock()
            # Writing takes the longest; other callers keep adding changes to the next batch.
            self._cond.release()
            try:
                version = self.backend.write(document, expected_version=expected)
            finally:
                self._cond.acquire()
            self._persisted, self._version, self._durable = document, version, through
        except BaseException as error:
            self._failure = error
            raise
        finally:
            self._inflight = None
            self._flushing = False
            self._cond.notify_all()

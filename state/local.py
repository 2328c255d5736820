"""The local-file state backend: one JSON file, its lock file and rolling backups.

Implements :class:`state.backend.StateBackend`; see that module for the contract. Files, for a
state at ``<dir>/<name>``:

- ``<name>``: the document, canonical bytes (``state.document.to_bytes``). Its version is the
  sha256 hex digest of those bytes.
- ``<name>.lock``: the :class:`~state.backend.LockInfo` of the run holding the state lock.
- ``<name>.backup.<serial>``: the document as it was before it was replaced, newest ``backups``
  kept (by serial).
- ``<name>.guard``: an OS file lock (``flock``) held for a few milliseconds around every
  read-compare-write, so that compare-and-swap is atomic between processes. The kernel drops it
  when its holder dies, so a killed run never leaves it held.
- ``.<name>.tmp-<hex>``: a file being written. Every file is written to a temporary file in the
  same directory (mode 0600), fsynced, renamed over its target and the directory fsynced, so a
  reader (or a crash) sees the old or the new bytes, never a mix. A temporary file left by a
  killed writer is never read; the next guarded operation deletes it (all temporary files are
  written under the guard, so one that exists while we hold it is a dead writer's).

The directory is created with mode 0700; every file in it is 0600 whatever the umask, since the
state can hold addresses and ids an attacker would like.

A lock file that does not parse is not ignored (that would let two runs in): it counts as held,
forever, by a lock whose id is :data:`UNKNOWN_LOCK_ID` (``"unknown"``), and
``force_unlock("unknown")`` removes it.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import filelock
from pydantic import ValidationError

from state.backend import UNKNOWN_LOCK_ID  # noqa: F401
from state.backend import LockInfo, Snapshot, held_error, lost_error, unreadable_lock
from state.document import StateDocument, check_successor, parse_document, to_bytes
from state.errors import StateConflictError, StateCorruptError, StateError

FILE_MODE = 0o600
DIR_MODE = 0o700
# Guarded sections last milliseconds; waiting this long means a peer is wedged (or the
# filesystem is), which deserves an error rather than a hang.
GUARD_TIMEOUT_S = 30.0


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class LocalBackend:
    """State in a local file. See :mod:`state.backend` for the contract and this module's
    docstring for the files it keeps."""

    def __init__(self, path: Path | str, backups: int = 5) -> None:
        if backups < 0:
            raise ValueError("backups must be >= 0")
        self.path = Path(path)
        self.backups = backups
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.guard_path = self.path.with_name(self.path.name + ".guard")
        self._temp_prefix = f".{self.path.name}.tmp-"
        self._temp_pattern = re.compile(re.escape(self._temp_prefix) + r"[0-9a-f]{32}\Z")
        self._backup_pattern = re.compile(re.escape(self.path.name) + r"\.backup\.(\d+)\Z")
        # flock excludes other processes; this excludes other threads of this one, whatever
        # filelock's per-thread reentrancy does.
        self._thread_guard = threading.Lock()
        self._file_guard = filelock.FileLock(
            self.guard_path, timeout=GUARD_TIMEOUT_S, mode=FILE_MODE, thread_local=False
        )

    def describe(self) -> str:
        return f"local file {self.path}"

    # -- document -------------------------------------------------------------------------

    def read(self) -> Snapshot | None:
        raw = _read_bytes(self.path)
        if raw is None:
            return None
        return Snapshot(document=self._parse(raw), version=digest(raw))

    def write(self, document: StateDocument, *, expected_version: str | None) -> str:
        new_raw = to_bytes(document)
        with self._guarded():
            current_raw = _read_bytes(self.path)
            current_version = None if current_raw is None else digest(current_raw)
            if current_version != expected_version:
                raise self._conflict(expected_version, current_version)
            current = None if current_raw is None else self._parse(current_raw)
            check_successor(current, document)
            if current is not None and current_raw is not None and self.backups > 0:
                self._write_backup(current.serial, current_raw)
            self._atomic_write(self.path, new_raw)
        return digest(new_raw)

    def _conflict(self, expected: str | None, current: str | None) -> StateConflictError:
        hint = "another run wrote the state meanwhile; run plan again"
        if expected is None:
            return StateConflictError(
                f"state already exists at {self.path}, but this run expected none", hint=hint
            )
        if current is None:
            return StateConflictError(
                f"state {self.path} was removed since it was read", hint=hint
            )
        return StateConflictError(
            f"state {self.path} changed since it was read (version {current[:12]}, "
            f"expected {expected[:12]})",
            hint=hint,
        )

    def _parse(self, raw: bytes) -> StateDocument:
        """Parse stored bytes; if they do not parse, name the newest backup that does."""
        try:
            return parse_document(raw, source=str(self.path))
        except StateCorruptError as exc:
            backup = self._newest_good_backup()
            if backup is None:
                hint = (
                    f"no backup of it parses; restore {self.path} from elsewhere, or inspect it "
                    "by hand (moving it away starts from empty state and forgets every resource "
                    "it recorded)"
                )
            else:
                hint = f"restore the newest good backup: cp {backup} {self.path}"
            raise StateCorruptError(
                exc.message, backup=None if backup is None else str(backup), hint=hint
            ) from exc

    # -- backups --------------------------------------------------------------------------

    def backup_paths(self) -> list[Path]:
        """Existing backups, newest (highest serial) first."""
        found: list[tuple[int, Path]] = []
        try:
            entries = list(self.path.parent.iterdir())
        except FileNotFoundError:
            return []
        for entry in entries:
            match = self._backup_pattern.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return [path for _, path in sorted(found, reverse=True)]

    def _newest_good_backup(self) -> Path | None:
        for candidate in self.backup_paths():
            raw = _read_bytes(candidate)
            if raw is None:
                continue
            try:
                parse_document(raw, source=str(candidate))
            except StateCorruptError:
                continue
            return candidate
        return None

    def _write_backup(self, serial: int, raw: bytes) -> None:
        # Written whole and renamed like the state itself: a backup that could be half written
        # would be no backup.
        self._atomic_write(self.path.with_name(f"{self.path.name}.backup.{serial}"), raw)
        for old in self.backup_paths()[self.backups :]:
            old.unlink(missing_ok=True)

    # -- lock -----------------------------------------------------------------------------

    def read_lock(self) -> LockInfo | None:
        raw = _read_bytes(self.lock_path)
        return None if raw is None else self._parse_lock(raw)

    def acquire_lock(self, info: LockInfo) -> None:
        with self._guarded():
            existing = self.read_lock()
            if existing is not None and not existing.expired():
                raise held_error(existing)
            self._write_lock(info)

    def renew_lock(self, info: LockInfo) -> None:
        with self._guarded():
            existing = self.read_lock()
            if existing is None or existing.id != info.id:
                raise lost_error(info, existing, str(self.path))
            self._write_lock(existing.model_copy(update={"expires_at": info.expires_at}))

    def release_lock(self, info: LockInfo) -> None:
        """Remove the lock if it is still ``info``'s; if absent or taken over, do nothing."""
        with self._guarded():
            existing = self.read_lock()
            if existing is not None and existing.id == info.id:
                self._remove(self.lock_path)

    def force_unlock(self, lock_id: str) -> LockInfo:
        with self._guarded():
            existing = self.read_lock()
            if existing is None:
                raise StateError(f"state {self.path} is not locked; nothing to unlock")
            if existing.id != lock_id:
                raise StateError(
                    f"lock {lock_id} does not hold state {self.path}: {existing.describe()}",
                    hint=f"to remove that lock: provisioner force-unlock {existing.id}",
                )
            self._remove(self.lock_path)
            return existing

    def _parse_lock(self, raw: bytes) -> LockInfo:
        try:
            return LockInfo.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            return unreadable_lock(f"file {self.lock_path}", exc, _mtime(self.lock_path))

    def _write_lock(self, info: LockInfo) -> None:
        self._atomic_write(self.lock_path, (info.model_dump_json(indent=2) + "\n").encode())

    # -- files ----------------------------------------------------------------------------

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        self._ensure_dir()
        with self._thread_guard:
            try:
                self._file_guard.acquire()
            except filelock.Timeout as exc:
                raise StateError(
                    f"timed out after {GUARD_TIMEOUT_S:.0f}s waiting for {self.guard_path}",
                    hint="another process holds it and seems stuck; find it (fuser "
                    f"{self.guard_path}) and end it",
                ) from exc
            try:
                self._sweep_temp_files()
                yield
            finally:
                self._file_guard.release()

    def _ensure_dir(self) -> None:
        directory = self.path.parent
        if directory.is_dir():
            return
        try:
            directory.mkdir(mode=DIR_MODE, parents=True)
        except FileExistsError:
            return  # made by a peer meanwhile; its mode is the peer's business
        # mkdir's mode is filtered by the umask; the state directory is owner-only regardless.
        os.chmod(directory, DIR_MODE)

    def _sweep_temp_files(self) -> None:
        """Delete temporary files of writers that died (every writer works under the guard)."""
        for entry in self.path.parent.iterdir():
            if self._temp_pattern.match(entry.name):
                entry.unlink(missing_ok=True)

    def _atomic_write(self, target: Path, data: bytes) -> None:
        temp = target.with_name(self._temp_prefix + uuid.uuid4().hex)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            try:
                os.fchmod(fd, FILE_MODE)  # the umask could only narrow it, but be explicit
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    def _remove(self, target: Path) -> None:
        target.unlink(missing_ok=True)
        _fsync_dir(target.parent)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is: fsync(2), "Calling fsync() does
    # not necessarily ensure that the entry in the directory containing the file has also
    # reached disk. For that an explicit fsync() on a file descriptor for the directory is
    # also needed."
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(path: Path) -> str:
    try:
        when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except FileNotFoundError:
        when = datetime.now(timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

"""What only the local backend promises: file modes, rolling backups, corruption reporting, and
that ``kill -9`` at any moment leaves a state file that parses (the kill test)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from state.backend import LockInfo
from state.document import StateDocument, to_bytes
from state.errors import LockHeldError, StateCorruptError, StateError
from state.local import LocalBackend
from tests.state.kill_writer import BACKUPS, make_doc

REPO_ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_serials(backend: LocalBackend, serials: range, lineage: str = "l") -> str | None:
    snapshot = backend.read()
    version = None if snapshot is None else snapshot.version
    for serial in serials:
        version = backend.write(
            StateDocument(lineage=lineage, serial=serial, outputs={"serial": serial}),
            expected_version=version,
        )
    return version


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    # Modes must be owner-only whatever the umask; a umask of 0 would otherwise give 0666/0777.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_modes_are_owner_only(tmp_path: Path, permissive_umask: None) -> None:
    backend = LocalBackend(tmp_path / "a" / "b" / "state.json", backups=2)
    write_serials(backend, range(1, 4))
    info = LockInfo.for_operation("apply", 60)
    backend.acquire_lock(info)
    assert mode(backend.path.parent) == 0o700
    assert mode(backend.path) == 0o600
    assert mode(backend.lock_path) == 0o600
    assert mode(backend.guard_path) == 0o600
    backups = backend.backup_paths()
    assert len(backups) == 2
    assert all(mode(path) == 0o600 for path in backups)
    backend.renew_lock(info)
    assert mode(backend.lock_path) == 0o600


def test_existing_directory_mode_is_left_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    LocalBackend(tmp_path / "state.json").write(
        StateDocument.new(), expected_version=None
    )
    assert mode(tmp_path) == 0o755


def test_rolling_backups_keep_the_newest(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state.json", backups=3)
    write_serials(backend, range(1, 7))
    backups = backend.backup_paths()
    assert [p.name for p in backups] == [f"state.json.backup.{n}" for n in (5, 4, 3)]
    for path in backups:
        serial = int(path.name.rsplit(".", 1)[1])
        assert StateDocument.model_validate_json(path.read_bytes()).serial == serial


def test_no_backups_when_disabled(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state.json", backups=0)
    write_serials(backend, range(1, 4))
    assert backend.backup_paths() == []


def test_corrupt_state_names_newest_good_backup(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state.json", backups=3)
    write_serials(backend, range(1, 5))
    raw = backend.path.read_bytes()
    backend.path.write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(StateCorruptError) as raised:
        backend.read()
    newest = tmp_path / "state.json.backup.3"
    assert str(backend.path) in str(raised.value)
    assert raised.value.backup == str(newest)
    assert raised.value.hint == f"restore the newest good backup: cp {newest} {backend.path}"

    newest.write_text("{not json")  # the newest backup is bad too: the next one is named
    with pytest.raises(StateCorruptError) as raised:
        backend.read()
    assert raised.value.backup == str(tmp_path / "state.json.backup.2")


def test_corrupt_state_without_backups(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state.json")
    backend.path.write_bytes(b"")
    with pytest.raises(StateCorruptError) as raised:
        backend.read()
    assert raised.value.backup is None
    assert raised.value.hint and "no backup" in raised.value.hint


def test_write_over_corrupt_state_is_refused(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state.json")
    backend.path.write_bytes(b'{"format_version": 1')
    corrupt_version = hashlib.sha256(backend.path.read_bytes()).hexdigest()
    with pytest.raises(StateCorruptError):
        backend.write(StateDocument.new(), expected_version=corrupt_version)


def test_version_is_digest_of_bytes(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state.json")
    document = StateDocument.new()
    version = backend.write(document, expected_version=None)
    assert version == hashlib.sha256(to_bytes(document)).hexdigest()
    assert backend.describe() == f"local file {backend.path}"


def test_unparseable_lock_counts_as_held_by_unknown(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state.json")
    tmp_path.joinpath("state.json.lock").write_text("garbage")
    held = backend.read_lock()
    assert held is not None and held.id == "unknown" and not held.expired()
    with pytest.raises(LockHeldError) as raised:
        backend.acquire_lock(LockInfo.for_operation("apply", 60))
    assert raised.value.info is not None and raised.value.info.id == "unknown"
    assert "force-unlock unknown" in (raised.value.hint or "")
    with pytest.raises(StateError):
        backend.force_unlock("some-id")
    assert backend.force_unlock("unknown").id == "unknown"
    backend.acquire_lock(LockInfo.for_operation("apply", 60))


def test_dead_writers_temp_files_are_swept(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state.json")
    leftover = tmp_path / f".state.json.tmp-{uuid.uuid4().hex}"
    leftover.write_text("half a docu")
    unrelated = tmp_path / f".other.json.tmp-{uuid.uuid4().hex}"
    unrelated.write_text("another state's business")
    assert backend.read() is None  # never read as state
    backend.write(StateDocument.new(), expected_version=None)
    assert not leftover.exists()
    assert unrelated.exists()


# -- the kill test ----------------------------------------------------------------------------

KILLS = 40
PRESPAWNED = 2
TEMP_NAME = re.compile(r"\.state\.json\.tmp-[0-9a-f]{32}\Z")
BACKUP_NAME = re.compile(r"state\.json\.backup\.(\d+)\Z")


def spawn_writer(path: Path, lineage: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.state.kill_writer", str(path), lineage],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(writer: subprocess.Popen[str]) -> None:
    assert writer.stdout is not None
    line = writer.stdout.readline()
    if line != "ready\n":
        writer.kill()
        _, err = writer.communicate()
        pytest.fail(f"writer did not start: {line!r} {err}")


def check_directory(directory: Path, lineage: str) -> tuple[int, int]:
    """Everything there is state, a good backup, the guard, or a temp file named as such.
    Returns (the stored serial, the number of temp files)."""
    backend = LocalBackend(directory / "state.json", backups=BACKUPS)
    snapshot = backend.read()  # raises StateCorruptError if the kill broke it
    serial = 0
    if snapshot is not None:
        serial = snapshot.document.serial
        assert to_bytes(snapshot.document) == to_bytes(make_doc(lineage, serial))
    temps = 0
    for entry in directory.iterdir():
        if entry.name in ("state.json", "state.json.guard"):
            continue
        if TEMP_NAME.match(entry.name):
            temps += 1
            continue
        match = BACKUP_NAME.match(entry.name)
        assert match, f"unexpected file {entry.name}"
        backup = StateDocument.model_validate_json(entry.read_bytes())
        assert to_bytes(backup) == to_bytes(make_doc(lineage, int(match.group(1))))
    return serial, temps


def kill_at_random(writer: subprocess.Popen[str], rng: random.Random) -> list[str]:
    """Let the writer go, kill -9 it at a random moment; return what it said."""
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write("go\n")
    writer.stdin.flush()
    said = []
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0.05, 0.35))  # anywhere, start-up included
    else:
        # Aimed into the n-th write, which takes tens of milliseconds.
        said = [writer.stdout.readline() for _ in range(rng.randint(1, 4))]
        time.sleep(rng.uniform(0.0, 0.05))
    writer.kill()
    rest, _ = writer.communicate()
    assert writer.returncode == -signal.SIGKILL, "the writer died by itself"
    return said + rest.splitlines()


def test_kill_9_never_corrupts(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    lineage = str(uuid.uuid4())
    rng = random.Random()
    serial = 0
    inside_write = temp_left = 0
    # Writers are started ahead of time so that interpreter start-up overlaps the runs.
    upcoming = deque(spawn_writer(path, lineage) for _ in range(PRESPAWNED))
    try:
        for _ in range(KILLS):
            writer = upcoming.popleft()
            upcoming.append(spawn_writer(path, lineage))
            wait_ready(writer)
            announced = [int(line.split()[1]) for line in kill_at_random(writer, rng) if line]
            stored, temps = check_directory(tmp_path, lineage)
            if announced:
                # Write n starts only once n-1 returned: n-1 is durable, n may or may not be.
                assert stored in (announced[-1] - 1, announced[-1]), (announced, stored)
                inside_write += stored == announced[-1] - 1
            else:
                assert stored == serial, "the state changed though nothing was written"
            serial = stored
            temp_left += temps > 0
    finally:
        for writer in upcoming:
            writer.kill()
            writer.communicate()

    # Shown with -rA: how far the writers got and where the kills landed.
    sys.stderr.write(
        f"kill test: serial {serial}; of {KILLS} kills, {inside_write} inside a write, "
        f"{temp_left} left a temp file\n"
    )
    assert serial >= KILLS, "the writers hardly wrote; the test proves little"
    assert inside_write >= KILLS // 4, "too few kills landed inside a write"
    # The next write sweeps the dead writers' temp files and keeps the backups rolling.
    backend = LocalBackend(path, backups=BACKUPS)
    snapshot = backend.read()
    assert snapshot is not None
    backend.write(make_doc(lineage, serial + 1), expected_version=snapshot.version)
    assert not [entry for entry in tmp_path.iterdir() if TEMP_NAME.match(entry.name)]
    assert len(backend.backup_paths()) == BACKUPS

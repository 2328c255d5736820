"""Code packages: a local ``working_dir`` packed into a deterministic zip named by its content.

The digest covers what Ray would run and nothing else: sorted relative paths, the executable bit
and the bytes of each file; not mtimes, owners or the directory's own path. So the same code
always gives the same package name, plan can tell "code changed" from "code unchanged" by
comparing names, and a package once uploaded never needs uploading again.

The zip holds everything under one top-level directory ``pkg/``: Ray strips a single top-level
directory when it unpacks a remote ``working_dir`` zip
(``ray._private.runtime_env.packaging.unzip_package(remove_top_level_directory=True)``), so the
files land at the root of the working directory as they were locally. Timestamps, permissions
and entry order are fixed, so building twice gives byte-identical files.

Skipped: anything named ``__pycache__``, ``.git`` or ``.DS_Store``, and ``*.pyc`` files. Symlinks
are followed when they point inside the directory and refused otherwise (a package must not
carry files from elsewhere on the machine).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from provisioner.errors import SpecError

TOP_LEVEL_DIR = "pkg"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
SKIP_DIRS = frozenset({"__pycache__", ".git"})
SKIP_FILES = frozenset({".DS_Store"})
SKIP_SUFFIXES = (".pyc",)
_CHUNK = 1 << 20
_DIGEST_FORMAT = b"provisioner-package-v1\0"  # bump if what the digest covers changes
_PACKAGE_NAME = re.compile(r"pkg_[0-9a-f]{32}\.zip")


@dataclass(frozen=True)
class _Entry:
    relpath: str  # posix, relative to the package root
    path: Path  # where to read it (a symlink's target resolved)
    executable: bool
    size: int


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _entries(directory: Path) -> list[_Entry]:
    """Every file of the package, sorted by relative path."""
    root = directory.resolve()
    if not root.is_dir():
        raise SpecError(
            f"package directory {directory} does not exist or is not a directory",
            source=str(directory),
        )
    out: list[_Entry] = []

    def walk(real_dir: Path, rel_dir: str, ancestors: frozenset[Path]) -> None:
        try:
            items = sorted(os.scandir(real_dir), key=lambda e: e.name)
        except OSError as exc:
            raise SpecError(f"cannot read {real_dir}: {exc.strerror}", source=str(directory)) from None
        for item in items:
            rel = f"{rel_dir}{item.name}"
            if item.name in SKIP_DIRS or item.name in SKIP_FILES or item.name.endswith(SKIP_SUFFIXES):
                continue
            real = Path(item.path)
            if item.is_symlink():
                target = real.resolve()
                if not _within(target, root):
                    raise SpecError(
                        f"symlink {rel} points outside the package directory (to {target})",
                        source=str(directory),
                        hint="copy the file into the directory, or make the link point inside it",
                    )
                if not target.exists():
                    raise SpecError(f"symlink {rel} is broken (points to {target})", source=str(directory))
                real = target
            try:
                st = real.stat()
            except OSError as exc:
                raise SpecError(f"cannot read {rel}: {exc.strerror}", source=str(directory)) from None
            if stat.S_ISDIR(st.st_mode):
                resolved = real.resolve()
                if resolved in ancestors:
                    raise SpecError(f"symlink loop at {rel}", source=str(directory))
                walk(resolved, rel + "/", ancestors | {resolved})
            elif stat.S_ISREG(st.st_mode):
                executable = bool(st.st_mode & stat.S_IXUSR)
                out.append(_Entry(rel, real, executable, st.st_size))
            # sockets, fifos, devices: not code; skipped

    walk(root, "", frozenset({root}))
    out.sort(key=lambda e: e.relpath)
    return out


def _header(entry: _Entry) -> bytes:
    mode = b"x" if entry.executable else b"-"
    return entry.relpath.encode("utf-8", "surrogateescape") + b"\0" + mode + b"\0"


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _digest_of(entries: list[_Entry]) -> str:
    h = hashlib.sha256(_DIGEST_FORMAT)
    for entry in entries:
        h.update(_header(entry))
        size = 0
        for chunk in _chunks(entry.path):
            h.update(chunk)
            size += len(chunk)
        h.update(b"\0" + str(size).encode() + b"\0")  # separates this file's bytes from the next
    return h.hexdigest()


def package_digest(directory: Path) -> str:
    """sha256 (hex) of the package ``directory`` would make."""
    try:
        return _digest_of(_entries(directory))
    except OSError as exc:
        raise SpecError(f"cannot read package file: {exc}", source=str(directory)) from None


def package_name(digest: str) -> str:
    """The package file name for ``digest``: ``pkg_<first 32 hex>.zip``."""
    return f"pkg_{digest[:32]}.zip"


def is_package_file(path: Path) -> bool:
    """A package built earlier (e.g. restored from a checkpoint): a file named like one."""
    return bool(_PACKAGE_NAME.fullmatch(path.name)) and path.is_file()


def package_name_of(source: Path) -> str:
    """The package name of ``source``: a directory to pack, or a package file."""
    return source.name if is_package_file(source) else package_name(package_digest(source))


def _zip_info(name: str, executable: bool) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.create_system = 3  # unix, so external_attr carries permissions everywhere
    is_dir = name.endswith("/")
    mode = stat.S_IFDIR | 0o755 if is_dir else stat.S_IFREG | (0o755 if executable else 0o644)
    info.external_attr = (mode << 16) | (0x10 if is_dir else 0)
    info.compress_type = zipfile.ZIP_STORED if is_dir else zipfile.ZIP_DEFLATED
    return info


def _write_zip(entries: list[_Entry], target: Path) -> str:
    """Write the zip of ``entries`` to ``target``; return the digest of what was read."""
    h = hashlib.sha256(_DIGEST_FORMAT)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr(_zip_info(TOP_LEVEL_DIR + "/", False), b"")
        for entry in entries:
            info = _zip_info(f"{TOP_LEVEL_DIR}/{entry.relpath}", entry.executable)
            h.update(_header(entry))
            size = 0
            with zf.open(info, "w", force_zip64=entry.size >= zipfile.ZIP64_LIMIT) as out:
                for chunk in _chunks(entry.path):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            h.update(b"\0" + str(size).encode() + b"\0")
    return h.hexdigest()


def build_package(directory: Path, dest_dir: Path) -> Path:
    """Pack ``directory`` into ``dest_dir/package_name(digest)`` unless it is already there.

    Written to a temporary file and renamed, so a package file is always whole. Raises
    :class:`SpecError` if the directory changed while it was being packed. A package file
    (:func:`is_package_file`) is copied as it is.
    """
    if is_package_file(directory):
        return _copy_package(directory, dest_dir)
    entries = _entries(directory)
    try:
        digest = _digest_of(entries)
    except OSError as exc:
        raise SpecError(f"cannot read package file: {exc}", source=str(directory)) from None
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / package_name(digest)
    if final.exists():
        return final
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=dest_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        written = _write_zip(entries, tmp)
        if written != digest:
            raise SpecError(
                "the directory changed while it was being packed",
                source=str(directory),
                hint="run again once the files stop changing",
            )
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except OSError as exc:
        raise SpecError(f"cannot write package {final}: {exc}", source=str(directory)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return final



def _copy_package(source: Path, dest_dir: Path) -> Path:
    final = dest_dir / source.name
    if final == source or final.exists():
        return final
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{source.name}.copy"
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except OSError as exc:
        raise SpecError(f"cannot copy package {source} to {dest_dir}: {exc}") from None
    return final

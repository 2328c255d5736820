"""Code packages: the digest follows content only; zips are byte-identical; skip rules; symlinks."""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from provisioner.errors import SpecError
from provisioner.serve.package import build_package, package_digest, package_name


def make_code(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text("def hello():\n    return 'hi'\n")
    (root / "lib").mkdir()
    (root / "lib" / "util.py").write_text("X = 1\n")
    (root / "lib" / "data.bin").write_bytes(bytes(range(256)) * 64)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    return root


def touch_all(root: Path, when: float) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (when, when))


def test_digest_is_stable_across_copies_and_mtimes(tmp_path: Path) -> None:
    a = make_code(tmp_path / "a")
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    touch_all(b, time.time() - 86400 * 30)
    assert package_digest(a) == package_digest(b)
    assert len(package_digest(a)) == 64


CHANGES = {
    "content": lambda d: (d / "lib" / "util.py").write_text("X = 2\n"),
    "new-file": lambda d: (d / "new.py").write_text(""),
    "removed-file": lambda d: (d / "lib" / "util.py").unlink(),
    "renamed-file": lambda d: (d / "app.py").rename(d / "app2.py"),
    "exec-bit-on": lambda d: os.chmod(d / "app.py", 0o755),
    "exec-bit-off": lambda d: os.chmod(d / "run.sh", 0o644),
    "moved-between-dirs": lambda d: (d / "lib" / "util.py").rename(d / "util.py"),
    "bytes-moved-between-files": lambda d: (
        (d / "app.py").write_text("def hello():\n    return 'hi'\nX = 1\n"),
        (d / "lib" / "util.py").write_text(""),
    ),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=list(CHANGES))
def test_changes_change_the_digest(tmp_path: Path, change) -> None:
    code = make_code(tmp_path / "code")
    before = package_digest(code)
    change(code)
    assert package_digest(code) != before


def test_non_exec_mode_bits_do_not_matter(tmp_path: Path) -> None:
    code = make_code(tmp_path / "code")
    before = package_digest(code)
    os.chmod(code / "app.py", 0o600)
    assert package_digest(code) == before


SKIPPED = {
    "__pycache__/app.cpython-311.pyc": b"x",
    "lib/__pycache__/util.cpython-311.pyc": b"x",
    "stray.pyc": b"x",
    ".git/HEAD": b"ref: refs/heads/main\n",
    ".DS_Store": b"x",
    "lib/.DS_Store": b"x",
}


def test_skip_rules(tmp_path: Path) -> None:
    code = make_code(tmp_path / "code")
    before = package_digest(code)
    for rel, data in SKIPPED.items():
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_bytes(data)
    assert package_digest(code) == before
    names = zipfile.ZipFile(build_package(code, tmp_path / "out")).namelist()
    assert not any("__pycache__" in n or n.endswith((".pyc", ".DS_Store")) or ".git/" in n for n in names)
    # a .gitignore or a .github directory is code, not skipped
    (code / ".gitignore").write_text("*.pyc\n")
    assert package_digest(code) != before


def test_zip_layout(tmp_path: Path) -> None:
    code = make_code(tmp_path / "code")
    path = build_package(code, tmp_path / "out")
    assert path == tmp_path / "out" / package_name(package_digest(code))
    assert path.name.startswith("pkg_") and len(path.name) == len("pkg_") + 32 + len(".zip")
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == ["pkg/", "pkg/app.py", "pkg/lib/data.bin", "pkg/lib/util.py", "pkg/run.sh"]
        assert zf.read("pkg/app.py") == (code / "app.py").read_bytes()
        assert zf.read("pkg/lib/data.bin") == (code / "lib" / "data.bin").read_bytes()
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in infos}
        assert modes["pkg/run.sh"] == 0o755 and modes["pkg/app.py"] == 0o644
        assert zf.getinfo("pkg/app.py").compress_type == zipfile.ZIP_DEFLATED
        assert zf.testzip() is None


def test_builds_are_byte_identical(tmp_path: Path) -> None:
    a = make_code(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    touch_all(b, 1_000_000_000)
    first = build_package(a, tmp_path / "out1")
    second = build_package(b, tmp_path / "out2")
    assert first.name == second.name
    assert first.read_bytes() == second.read_bytes()


def test_existing_package_is_not_rewritten(tmp_path: Path) -> None:
    code = make_code(tmp_path / "code")
    out = tmp_path / "out"
    first = build_package(code, out)
    stamp = first.stat().st_mtime_ns
    os.utime(first, ns=(stamp - 10**9, stamp - 10**9))
    assert build_package(code, out) == first
    assert first.stat().st_mtime_ns == stamp - 10**9
    assert [p.name for p in out.iterdir()] == [first.name]  # no temp files left


def test_symlink_inside_is_followed(tmp_path: Path) -> None:
    code = make_code(tmp_path / "code")
    plain = package_digest(code)
    (code / "alias.py").symlink_to("app.py")
    (code / "lib2").symlink_to("lib", target_is_directory=True)
    digest = package_digest(code)
    assert digest != plain
    with zipfile.ZipFile(build_package(code, tmp_path / "out")) as zf:
        assert zf.read("pkg/alias.py") == (code / "app.py").read_bytes()
        assert zf.read("pkg/lib2/util.py") == b"X = 1\n"


@pytest.mark.parametrize("kind", ["file", "dir", "broken", "loop"])
def test_bad_symlinks_are_refused(tmp_path: Path, kind: str) -> None:
    code = make_code(tmp_path / "code")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    if kind == "file":
        (code / "link").symlink_to(outside)
        match = "points outside the package directory"
    elif kind == "dir":
        (code / "link").symlink_to(tmp_path, target_is_directory=True)
        match = "points outside the package directory"
    elif kind == "broken":
        (code / "link").symlink_to(code / "missing.py")
        match = "is broken"
    else:
        (code / "lib" / "up").symlink_to(code, target_is_directory=True)
        match = "symlink loop"
    with pytest.raises(SpecError, match=match):
        package_digest(code)
    with pytest.raises(SpecError, match=match):
        build_package(code, tmp_path / "out")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        package_digest(tmp_path / "nope")


def test_empty_directory_packs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with zipfile.ZipFile(build_package(tmp_path / "empty", tmp_path / "out")) as zf:
        assert zf.namelist() == ["pkg/"]


def test_ray_strips_the_single_top_level_directory(tmp_path: Path) -> None:
    packaging = pytest.importorskip("ray._private.runtime_env.packaging")
    code = make_code(tmp_path / "code")
    path = build_package(code, tmp_path / "out")
    assert packaging.get_top_level_dir_from_compressed_package(str(path)) == "pkg"
    target = tmp_path / "unpacked"
    packaging.unzip_package(str(path), str(target), remove_top_level_directory=True, unlink_zip=False)
    assert (target / "app.py").read_text() == (code / "app.py").read_text()
    assert (target / "lib" / "util.py").exists()

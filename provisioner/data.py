"""Where the built-in ``modules/`` and ``templates/`` are: inside an installed wheel they are
packaged as ``provisioner/_data/<name>``; in a checkout they sit beside the package."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"provisioner's {name}/ directory is missing from the installation")

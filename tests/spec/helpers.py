"""Shared bits of the spec tests: writing a case's files and a minimal valid spec."""

from __future__ import annotations

import textwrap
from pathlib import Path

SERVE_YAML = """\
proxy_location: EveryNode
applications:
  - name: hello
    route_prefix: /hello
    import_path: app:hello
    runtime_env:
      working_dir: ./app
    deployments:
      - name: Hello
        num_replicas: 1
"""

BASE_SPEC = """\
version: 1
name: quickstart
provider: local
"""


def write_tree(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative path -> text, dedented) under ``root``; ``name/`` makes a dir."""
    for rel, text in files.items():
        target = root / rel
        if rel.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))

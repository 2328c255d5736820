"""Rendering of ``templates/``: everything provisioner writes onto machines comes from there.

Jinja2 is imported on first use. ``shquote`` quotes a value for sh.
"""

from __future__ import annotations

import shlex
from functools import lru_cache
from typing import Any

from provisioner.data import data_path


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["shquote"] = lambda value: shlex.quote(str(value))
    return env


def render(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(**context)

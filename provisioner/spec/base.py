"""The base of every spec model: strict keys, strict types, and cross-field checks with paths.

Pydantic's model validators can only blame a whole model; checks that relate several fields
(unique names, references between groups) instead implement :meth:`SpecModel.problems`, which
yields the exact relative path of each problem. The loader turns them into :class:`SpecError` s.
"""

from __future__ import annotations

from typing import Iterator

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

Problem = tuple[tuple[str | int, ...], str]


class SpecModel(BaseModel):
    """Strict: unknown keys are errors and ``"8265"`` is not an integer (YAML has types)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, defer_build=True)

    def problems(self) -> Iterator[Problem]:
        """Cross-field problems as ``(relative path, message)``; none by default."""
        return iter(())


def expected(what: str) -> PydanticCustomError:
    """A validator error rendered as "expected <what>, got <input>" (input hidden if secret)."""
    return PydanticCustomError("expected", "expected {what}", {"what": what})

"""Reading YAML (and JSON) files into plain data, with line numbers kept for error messages.

PyYAML silently keeps the last of two equal keys; a spec with ``dashboard_port`` written twice
would then mean something its author did not see, so duplicates are an error here. Every
mapping key and list item's line is recorded in a :class:`LineMap` so that a validation error
found later, on the plain data, can still say where in the file it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from provisioner.errors import SpecError

# The C loader is several times faster; construction (where duplicates are caught) stays Python.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

PathParts = tuple[str | int, ...]


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key)
        self.key = key
        self.line = line


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that refuses duplicate keys in a mapping (merge keys ``<<`` may override)."""


def _construct_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key such as a list
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable mapping key", key_node.start_mark
            ) from None
        if duplicate:
            raise _DuplicateKey(key, key_node.start_mark.line + 1)
        seen.add(key)
    loader.flatten_mapping(node)
    return {
        loader.construct_object(k, deep=True): loader.construct_object(v, deep=True)
        for k, v in node.value
    }


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


@dataclass
class LineMap:
    """Line numbers (1-based) of keys and list items, by path (``("cluster", "gcs_port")``)."""

    lines: dict[PathParts, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        parts = tuple(path)
        while parts:
            line = self.lines.get(parts)
            if line is not None:
                return line
            parts = parts[:-1]
        return None


def _index_lines(node: yaml.Node, prefix: PathParts, out: dict[PathParts, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key: str | int = key_node.value
            if key_node.tag == "tag:yaml.org,2002:int":
                try:
                    key = int(key_node.value)
                except ValueError:
                    pass
            path = (*prefix, key)
            out.setdefault(path, key_node.start_mark.line + 1)
            _index_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = (*prefix, i)
            out[path] = item.start_mark.line + 1
            _index_lines(item, path, out)


def parse_yaml(text: str, *, source: str) -> tuple[Any, LineMap]:
    """Parse one YAML document; errors become :class:`SpecError` with line and column."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, LineMap()
        data = loader.construct_document(node)
    except _DuplicateKey as exc:
        raise SpecError(
            f"duplicate key {exc.key!r} at line {exc.line}",
            source=source,
            hint="each key may appear once in a mapping; remove one of them",
        ) from None
    except yaml.MarkedYAMLError as exc:
        raise SpecError(_describe_yaml_error(exc), source=source) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", source=source) from None
    finally:
        loader.dispose()
    lines: dict[PathParts, int] = {}
    _index_lines(node, (), lines)
    return data, LineMap(lines)


def _describe_yaml_error(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if mark is None:
        return f"invalid YAML: {problem}"
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    context = ""
    if exc.context and exc.context_mark and exc.problem:
        context = f" ({exc.context} at line {exc.context_mark.line + 1})"
    return f"invalid YAML at {where}: {problem}{context}"


def read_yaml_file(path: Path, *, source: str, what: str = "file") -> tuple[Any, LineMap]:
    """Read and parse ``path``; a missing or unreadable file is a :class:`SpecError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{what} not found", source=source) from None
    except IsADirectoryError:
        raise SpecError(f"{what} is a directory, expected a file", source=source) from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{what} is not UTF-8 text ({exc.reason})", source=source) from None
    except OSError as exc:
        raise SpecError(f"cannot read {what}: {exc.strerror}", source=source) from None
    return parse_yaml(text, source=source)

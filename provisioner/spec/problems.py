"""Turning pydantic's validation errors into :class:`SpecError` s a person can act on.

Pydantic reports ``('cluster', 'dashboard_port')`` / ``int_parsing`` / "Input should be a valid
integer, unable to parse string as an integer"; users should read
``cluster.yaml: cluster.dashboard_port: expected an integer, got 'abc' (line 7)``. This module
owns that translation for the spec and the Serve manifest alike: dotted paths with ``[i]`` for
list items, error types in plain words, "did you mean" for misspelt keys, line numbers from
the YAML file, and inputs hidden where they came from a sensitive variable.
"""

from __future__ import annotations

import difflib
import re
import collections.abc
import types
import typing
from typing import Any, Iterable, Sequence, Union

from pydantic import BaseModel, ValidationError

from provisioner.errors import SpecError
from provisioner.spec.yamlfile import LineMap

_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# Error types whose wording is "expected <what>, got <input>".
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "none_required": "null",
}


def format_path(parts: Iterable[str | int]) -> str:
    """``("applications", 1, "deployments", 0, "name")`` -> ``applications[1].deployments[0].name``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def show(value: Any, limit: int = 60) -> str:
    """A short, YAML-flavoured rendering of an input value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= limit else value[: limit - 3] + "..."
        return repr(text)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word``, if one is close enough to be a typo."""
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key_message(key: Any, allowed: Iterable[str] | None) -> tuple[str, str | None]:
    """Message and hint for a key that is not allowed here."""
    message = f"unknown key {str(key)!r}"
    if allowed is None:
        return message, None
    allowed = sorted(allowed)
    guess = did_you_mean(str(key), allowed)
    if guess:
        message += f"; did you mean {guess!r}?"
    return message, "allowed keys here: " + ", ".join(allowed)


# -- walking a model class along a path, to know which keys were allowed where ----------------


def _unwrap(tp: Any) -> list[Any]:
    """The concrete alternatives behind Annotated / Optional / Union."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in typing.get_args(tp):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [tp]


def _step(tp: Any, part: str | int) -> Any | None:
    for alt in _unwrap(tp):
        origin = typing.get_origin(alt)
        if isinstance(alt, type) and issubclass(alt, BaseModel) and isinstance(part, str):
            field = alt.model_fields.get(part)
            if field is not None:
                return field.annotation
        elif origin in (list, tuple, set, collections.abc.Sequence) and isinstance(part, int):
            args = typing.get_args(alt)
            return args[0] if args else Any
        elif origin in (dict, collections.abc.Mapping) and isinstance(part, str):
            args = typing.get_args(alt)
            return args[1] if len(args) == 2 else Any
    return None


def allowed_keys(root: type[BaseModel], parts: Sequence[str | int]) -> list[str] | None:
    """The field names of the model found at ``parts`` below ``root``, if it is a model."""
    tp: Any = root
    for part in parts:
        tp = _step(tp, part)
        if tp is None:
            return None
    for alt in _unwrap(tp):
        if isinstance(alt, type) and issubclass(alt, BaseModel):
            return list(alt.model_fields)
    return None


# -- the conversion ------------------------------------------------------------------------


def _data_path(loc: Sequence[str | int], data: Any, *, missing: bool) -> tuple[str | int, ...]:
    """Keep the parts of a pydantic ``loc`` that step into the data; drop union-member tags."""
    out: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = current[part]
            out.append(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            out.append(part)
        elif missing and i == len(loc) - 1 and isinstance(part, str):
            out.append(part)
        else:
            # a union member or validator tag such as 'int' or "function-after[...]"
            continue
    return tuple(out)


def _strip_prefix(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _describe(err: dict[str, Any], *, hide_input: bool) -> str:
    kind = err["type"]
    ctx = {k: _number(v) for k, v in (err.get("ctx") or {}).items()}
    value = err.get("input")
    got = "" if hide_input else f", got {show(value)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}{got}"
    if kind == "expected":
        return f"expected {ctx.get('what')}{got}"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}{got}"
    if kind == "enum":
        return f"expected one of {ctx.get('expected')}{got}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}{got}"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')}{got}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}{got}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}{got}"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}{got}"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must be at least {ctx.get('min_length')} character(s) long{got}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} character(s) long{got}"
    if kind == "too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"must have at least {n} items"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    # value_error and custom errors: our own validators wrote the text.
    return _strip_prefix(str(err.get("msg", kind)))


def spec_error_from_validation(
    exc: ValidationError,
    *,
    source: str,
    data: Any,
    root: type[BaseModel] | None = None,
    prefix: Sequence[str | int] = (),
    lines: LineMap | None = None,
    hidden_paths: Iterable[tuple[str | int, ...]] = (),
) -> SpecError:
    """One :class:`SpecError` for a pydantic ``ValidationError`` raised on ``data``.

    ``root`` is the model ``data`` was validated against (for the keys a misspelt key could
    have meant), ``prefix`` the path of ``data`` in its file, ``hidden_paths`` the paths whose
    values came from sensitive variables and must not be shown. The first problem is the
    message; a few more follow it, one a line.
    """
    hidden = [tuple(p) for p in hidden_paths]
    items: list[tuple[tuple[str | int, ...], str, str | None]] = []
    suggested: set[tuple[str | int, ...]] = set()
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    for err in errors:
        rel = _data_path(err["loc"], data, missing=err["type"] == "missing")
        full = (*prefix, *rel)
        hint = None
        if err["type"] == "extra_forbidden":
            keys = allowed_keys(root, rel[:-1]) if root is not None else None
            message, hint = unknown_key_message(rel[-1] if rel else "?", keys)
            guess = did_you_mean(str(rel[-1]), keys or ()) if rel else None
            if guess:
                suggested.add((*full[:-1], guess))
        elif err["type"] == "missing" and full in suggested:
            continue  # the misspelt key's "did you mean" already says it
        else:
            hide = any(full[: len(h)] == h for h in hidden)
            message = _describe(err, hide_input=hide)
        if lines is not None:
            line = lines.line_of(full)
            if line is not None:
                message += f" (line {line})"
        items.append((full, message, hint))
    path, message, hint = items[0]
    rest = items[1:]
    if rest:
        shown = rest[:5]
        message += "".join(f"\n  also {format_path(p) or '(top level)'}: {m}" for p, m, _ in shown)
        if len(rest) > len(shown):
            message += f"\n  ... and {len(rest) - len(shown)} more"
    return SpecError(message, source=source, path=format_path(path) or None, hint=hint)

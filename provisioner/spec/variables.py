"""Input variables: where their values come from, how they are typed, checked and kept secret.

Precedence is Terraform's, later wins: the declared ``default`` < the environment
(``PROVISIONER_VAR_<name>``) < ``--var-file`` and ``--var`` in the order they were given on the
command line. That order is one sequence of :data:`VarArg` items, ``("var", "name=value")`` or
``("file", "path")``; :func:`var_order_from_argv` recovers it from ``sys.argv`` because a CLI
parser hands back each option's values as a separate list.

Values given as text (``--var``, the environment) are parsed by the declared type; values from
files and defaults must already have it. A sensitive variable's value never appears in an error;
saved plans carry a digest of it instead (:meth:`ResolvedVariables.for_plan`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

from provisioner.errors import SpecError
from provisioner.spec.models import VariableDecl
from provisioner.spec.problems import did_you_mean, show
from provisioner.spec.yamlfile import parse_yaml, read_yaml_file
from provisioner.values import SENSITIVE_PREFIX

ENV_PREFIX = "PROVISIONER_VAR_"
VarArg = tuple[Literal["var", "file"], str]

_EXPECTED = {
    "string": "a string",
    "number": "a number",
    "bool": "true or false",
    "list": "a list",
    "map": "a mapping",
}


class _Mismatch(Exception):
    """A value does not have the declared type; ``str(exc)`` says what was expected."""


# -- typing values ------------------------------------------------------------------------------


def _check_type(value: Any, type_: str) -> Any:
    """``value`` (already typed: YAML, JSON) if it has ``type_``; else :class:`_Mismatch`."""
    ok = {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v),
        "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "map": lambda v: isinstance(v, dict),
        "any": lambda v: True,
    }[type_]
    if not ok(value):
        hint = " (quote it to make it a string)" if type_ == "string" and value is not None else ""
        raise _Mismatch(f"expected {_EXPECTED[type_]}{hint}")
    return value


def _parse_number(text: str) -> int | float:
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        number = float(stripped)
    except ValueError:
        raise _Mismatch("expected a number") from None
    if not math.isfinite(number):
        raise _Mismatch("expected a finite number")
    return int(number) if number.is_integer() else number


def parse_text(text: str, type_: str) -> Any:
    """A value given as text (``--var``, environment) parsed by the declared type."""
    if type_ == "string":
        return text
    if type_ == "number":
        return _parse_number(text)
    if type_ == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise _Mismatch("expected true, false, 1 or 0")
    if type_ in ("list", "map"):
        example = "[a, b] or a JSON list" if type_ == "list" else "{key: value} or a JSON object"
        try:
            value, _ = parse_yaml(text, source="value")
        except SpecError:
            raise _Mismatch(f"expected {_EXPECTED[type_]} ({example})") from None
        if value is None and text.strip() == "":
            value = [] if type_ == "list" else {}
        try:
            return _check_type(value, type_)
        except _Mismatch:
            raise _Mismatch(f"expected {_EXPECTED[type_]} ({example})") from None
    # any: YAML's reading of a scalar ("8000" -> 8000, "true" -> True), text if not YAML.
    if text == "":
        return ""
    try:
        value, _ = parse_yaml(text, source="value")
    except SpecError:
        return text
    return value


# -- the result ---------------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _digest(name: str, value: Any) -> str:
    data = f"{name}\0{_canonical(value)}".encode()
    return SENSITIVE_PREFIX + hashlib.sha256(data).hexdigest()


def _string_forms(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool):
        yield "true" if value else "false"
    elif isinstance(value, (int, float)):
        yield str(value)
    elif isinstance(value, (list, dict)):
        yield _canonical(value)
        yield json.dumps(value, default=str)
        for item in value.values() if isinstance(value, dict) else value:
            yield from _string_forms(item)


@dataclass(repr=False)
class ResolvedVariables:
    """The final value of every declared variable, with where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sensitive: set[str] = field(default_factory=set)
    sources: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print a secret in a traceback or debug log
        shown = {n: "(sensitive)" if n in self.sensitive else v for n, v in self.values.items()}
        return f"ResolvedVariables(values={shown!r}, sources={self.sources!r})"

    def sensitive_values(self) -> list[str]:
        """String forms of sensitive values, longest first, for redacting text."""
        forms = {s for name in self.sensitive for s in _string_forms(self.values.get(name)) if s}
        return sorted(forms, key=lambda s: (-len(s), s))

    def redact(self, text: str, *, min_length: int = 1) -> str:
        """``text`` with every sensitive value (of at least ``min_length`` chars) replaced."""
        for secret in self.sensitive_values():
            if len(secret) >= min_length:
                text = text.replace(secret, "(sensitive)")
        return text

    def for_plan(self) -> dict[str, Any]:
        """Values to save in a plan: sensitive ones as ``sensitive:sha256:<hex>`` digests."""
        # Through JSON so a plan file can hold them (YAML may have made dates of "2024-01-01").
        return {
            name: _digest(name, value) if name in self.sensitive else json.loads(_canonical(value))
            for name, value in sorted(self.values.items())
        }

    def check_against_plan(self, saved: Mapping[str, Any]) -> None:
        """Refuse to apply a saved plan made with other variable values."""
        current = self.for_plan()
        missing = object()
        differ: list[str] = []
        for name in sorted(set(saved) | set(current)):
            then, now = saved.get(name, missing), current.get(name, missing)
            if then is missing or now is missing or _canonical(then) != _canonical(now):
                secret = name in self.sensitive or (
                    isinstance(then, str) and then.startswith(SENSITIVE_PREFIX)
                )
                if secret:
                    differ.append(f"{name} (sensitive: differs from the value the plan was made with)")
                elif then is missing:
                    differ.append(f"{name} (not in the plan)")
                elif now is missing:
                    differ.append(f"{name} (no longer declared)")
                else:
                    differ.append(f"{name} (plan: {show(then)}, now: {show(now)})")
        if differ:
            raise SpecError(
                "the saved plan was made with other variable values: " + "; ".join(differ),
                source="saved plan",
                hint="pass the same --var / --var-file / PROVISIONER_VAR_* values as for plan,"
                " or make a new plan",
            )


# -- resolving ----------------------------------------------------------------------------------


@dataclass
class _Origin:
    """Where a value came from: for ``sources``, messages and the SpecError's source/path."""

    label: str  # "default", "--var", "--var-file prod.yaml", "environment (PROVISIONER_VAR_x)"
    source: str
    path: str


def _type_error(name: str, decl: VariableDecl, origin: _Origin, value: Any, why: str) -> SpecError:
    got = "" if decl.sensitive else f", got {show(value)}"
    return SpecError(
        f"variable {name!r} (from {origin.label}): {why}{got}",
        source=origin.source,
        path=origin.path,
    )


def _failed_rule(value: Any, decl: VariableDecl) -> str | None:
    """How ``value`` fails the declared validation rules, or None."""
    rules = decl.validation
    if rules is None or value is None:
        return None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and rules.min is not None and value < rules.min:
        return f"must be at least {rules.min}"
    if is_number and rules.max is not None and value > rules.max:
        return f"must be at most {rules.max}"
    if isinstance(value, str) and rules.pattern is not None and not re.fullmatch(rules.pattern, value):
        return f"must match the pattern {rules.pattern}"
    if rules.one_of is not None and not any(_same(value, allowed) for allowed in rules.one_of):
        return "must be one of " + ", ".join(show(a) for a in rules.one_of)
    return None


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _undeclared(name: str, decls: Mapping[str, VariableDecl], spec_name: str, origin: _Origin) -> SpecError:
    declared = ", ".join(sorted(decls)) or "(none)"
    message = f"variable {name!r} is not declared in {spec_name}; declared: {declared}"
    guess = did_you_mean(name, decls)
    if guess:
        message += f"; did you mean {guess!r}?"
    return SpecError(
        message,
        source=origin.source,
        path=origin.path,
        hint=f"declare it under 'variables:' in {spec_name}, or remove it",
    )


def _read_var_file(path_text: str) -> dict[str, Any]:
    path = Path(path_text)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SpecError("var file not found", source=path_text) from None
        except OSError as exc:
            raise SpecError(f"cannot read var file: {exc.strerror}", source=path_text) from None
        except json.JSONDecodeError as exc:
            where = f" at line {exc.lineno}, column {exc.colno}"
            raise SpecError(f"invalid JSON{where}: {exc.msg}", source=path_text) from None
        except UnicodeDecodeError as exc:
            raise SpecError(f"var file is not UTF-8 text ({exc.reason})", source=path_text) from None
    else:
        data, _ = read_yaml_file(path, source=path_text, what="var file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(
            f"a var file must be a mapping of variable names to values, got {show(data)}",
            source=path_text,
        )
    return data


def resolve_variables(
    decls: Mapping[str, VariableDecl],
    *,
    spec_source: str,
    order: Sequence[VarArg] = (),
    environ: Mapping[str, str] | None = None,
) -> ResolvedVariables:
    """Every declared variable's value by precedence; check types, rules and required ones."""
    environ = os.environ if environ is None else environ
    spec_name = Path(spec_source).name
    values: dict[str, Any] = {}
    origins: dict[str, _Origin] = {}

    def put(name: str, value: Any, origin: _Origin, *, text: bool) -> None:
        decl = decls.get(name)
        if decl is None:
            raise _undeclared(name, decls, spec_name, origin)
        try:
            if origin.label == "default" and value is None:
                values[name] = None  # `default: null`: optional, and null unless set
            elif text:
                values[name] = parse_text(value, decl.type)
            else:
                values[name] = _check_type(value, decl.type)
        except _Mismatch as exc:
            raise _type_error(name, decl, origin, value, str(exc)) from None
        origins[name] = origin

    for name, decl in decls.items():
        if not decl.required:
            put(name, decl.default, _Origin("default", spec_source, f"variables.{name}.default"), text=False)
    for name in decls:
        key = ENV_PREFIX + name
        if key in environ:
            put(name, environ[key], _Origin(f"environment ({key})", "environment", key), text=True)
    for kind, item in order:
        if kind == "file":
            for name, value in _read_var_file(item).items():
                put(str(name), value, _Origin(f"--var-file {item}", item, str(name)), text=False)
        elif kind == "var":
            name, sep, text = item.partition("=")
            name = name.strip()
            if not sep or not name:
                raise SpecError(
                    "--var expects NAME=VALUE" + (f", got {name!r}" if not sep and name else ""),
                    source="--var",
                    hint="for example --var dashboard_port=8266",
                )
            put(name, text, _Origin("--var", "--var", name), text=True)
        else:
            raise ValueError(f"unknown variable argument kind {kind!r}")  # a caller's bug

    for name, decl in decls.items():
        if name not in values:
            raise SpecError(
                f"variable {name!r} is required and has no value",
                source=spec_source,
                path=f"variables.{name}",
                hint=f"set it with --var {name}=..., in a --var-file, "
                f"or with the environment variable {ENV_PREFIX}{name}",
            )
        failure = _failed_rule(values[name], decl)
        if failure is not None:
            origin = origins[name]
            rules = decl.validation
            message = rules.message if rules is not None and rules.message else failure
            got = "" if decl.sensitive else f" (got {show(values[name])})"
            raise SpecError(
                f"variable {name!r} (from {origin.label}): {message}{got}",
                source=origin.source,
                path=origin.path,
                hint=failure if rules is not None and rules.message else None,
            )

    return ResolvedVariables(
        values=values,
        sensitive={name for name, decl in decls.items() if decl.sensitive},
        sources={name: origin.label for name, origin in origins.items()},
    )


def var_order_from_argv(argv: Sequence[str]) -> list[VarArg]:
    """The ``--var`` and ``--var-file`` arguments of ``argv`` in command-line order.

    Understands ``--var k=v``, ``--var=k=v``, ``--var-file F`` and ``--var-file=F``; stops at
    ``--``. Pass the result as ``load_spec(..., cli_var_order=...)``.
    """
    out: list[VarArg] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        for flag, kind in (("--var", "var"), ("--var-file", "file")):
            if arg == flag and i + 1 < len(argv):
                out.append((kind, argv[i + 1]))  # type: ignore[arg-type]
                i += 1
                break
            if arg.startswith(flag + "="):
                out.append((kind, arg[len(flag) + 1:]))  # type: ignore[arg-type]
                break
        i += 1
    return out

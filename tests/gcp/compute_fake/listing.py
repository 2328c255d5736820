"""List requests: the ``filter`` expression, ``orderBy``, ``maxResults`` and ``pageToken``.

Filters follow the syntax documented on every list method (``ListInstancesRequest.filter``):
either AIP-160 comparisons (``=``, ``!=``, ``<``, ``>``, ``<=``, ``>=``, ``:`` with ``:*`` for
presence), whole expressions in parentheses joined by ``AND`` (also implicit) and ``OR``; or
regular-expression comparisons ``eq`` / ``ne`` (RE2, must match the whole field) on a single
un-parenthesized expression or on parenthesized ones. The two kinds cannot be mixed. Field
names are the JSON ones, nested with dots (``labels.role``, ``scheduling.automaticRestart``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Callable

from .errors import invalid

Predicate = Callable[[dict], bool]

_FIELD = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*"
_SINGLE_REGEX = re.compile(rf"\s*({_FIELD})\s+(eq|ne)\s+(.*?)\s*\Z", re.S)
_OPS = ("!=", "<=", ">=", "=", "<", ">", ":")
MAX_RESULTS = 500


def _bad(text: str):
    return invalid("filter", text, "Invalid list filter expression.")


def _lookup(item: dict, field: str) -> list:
    """The values at a dotted path (lists fan out), or [] when absent."""
    values = [item]
    for part in field.split("."):
        found = []
        for value in values:
            if isinstance(value, dict) and part in value:
                inner = value[part]
                found.extend(inner if isinstance(inner, list) else [inner])
        values = found
    return values


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compare(op: str, actual: object, wanted: str) -> bool:
    have = _text(actual)
    if op == ":":
        return wanted in have if isinstance(actual, str) else have == wanted
    if op in ("=", "!="):
        a, b = _number(have), _number(wanted)
        equal = a == b if a is not None and b is not None and not isinstance(actual, str) \
            else have == wanted
        return equal if op == "=" else not equal
    a, b = _number(have), _number(wanted)
    left, right = (a, b) if a is not None and b is not None else (have, wanted)
    return {"<": left < right, ">": left > right, "<=": left <= right,
            ">=": left >= right}[op]


def _comparison(field: str, op: str, value: str) -> Predicate:
    if op in ("eq", "ne"):
        pattern = re.compile(value)

        def regex(item: dict) -> bool:
            hit = any(pattern.fullmatch(_text(v)) for v in _lookup(item, field))
            return hit if op == "eq" else not hit
        return regex
    if op == ":" and value == "*":
        return lambda item: bool(_lookup(item, field))
    if op == "!=":
        return lambda item: all(_compare("!=", v, value) for v in _lookup(item, field))
    return lambda item: any(_compare(op, v, value) for v in _lookup(item, field))


class _Parser:
    """Recursive descent over the filter text; OR binds tighter than AND (AIP-160)."""

    def __init__(self, text: str):
        self.text, self.pos, self.kinds = text, 0, set()

    def parse(self) -> Predicate:
        predicate = self._and()
        self._skip()
        if self.pos != len(self.text):
            raise _bad(self.text)
        if len(self.kinds) > 1:
            raise _bad(self.text)  # regex and AIP-160 comparisons cannot be mixed
        return predicate

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _keyword(self, word: str) -> bool:
        self._skip()
        end = self.pos + len(word)
        if self.text[self.pos:end] == word and (end == len(self.text)
                                                 or not self.text[end].isalnum()):
            self.pos = end
            return True
        return False

    def _and(self) -> Predicate:
        terms = [self._or()]
        while True:
            self._skip()
            if self.pos >= len(self.text) or self.text[self.pos] == ")":
                break
            self._keyword("AND")
            terms.append(self._or())
        return lambda item: all(term(item) for term in terms)

    def _or(self) -> Predicate:
        terms = [self._term()]
        while self._keyword("OR"):
            terms.append(self._term())
        return lambda item: any(term(item) for term in terms)

    def _term(self) -> Predicate:
        self._skip()
        if self._keyword("NOT") or self.text.startswith("-", self.pos):
            if self.text.startswith("-", self.pos):
                self.pos += 1
            inner = self._term()
            return lambda item: not inner(item)
        if self.text.startswith("(", self.pos):
            self.pos += 1
            inner = self._and()
            self._skip()
            if not self.text.startswith(")", self.pos):
                raise _bad(self.text)
            self.pos += 1
            return inner
        match = re.compile(_FIELD).match(self.text, self.pos)
        if not match:
            raise _bad(self.text)
        field, self.pos = match.group(0), match.end()
        self._skip()
        for word in ("eq", "ne"):
            if self._keyword(word):
                self.kinds.add("regex")
                return _comparison(field, word, self._value(until_paren=True))
        for op in _OPS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                self.kinds.add("aip160")
                return _comparison(field, op, self._value(until_paren=False))
        raise _bad(self.text)

    def _value(self, until_paren: bool) -> str:
        self._skip()
        if self.pos < len(self.text) and self.text[self.pos] in "\"'":
            quote, out = self.text[self.pos], []
            self.pos += 1
            while self.pos < len(self.text) and self.text[self.pos] != quote:
                if self.text[self.pos] == "\\" and self.pos + 1 < len(self.text):
                    self.pos += 1
                out.append(self.text[self.pos])
                self.pos += 1
            if self.pos >= len(self.text):
                raise _bad(self.text)
            self.pos += 1
            return "".join(out)
        start = self.pos
        stop = ")" if until_paren else ") \t\n"
        while self.pos < len(self.text) and self.text[self.pos] not in stop:
            self.pos += 1
        value = self.text[start:self.pos].strip()
        if not value:
            raise _bad(self.text)
        return value


def parse_filter(text: str | None) -> Predicate:
    if not text or not text.strip():
        return lambda item: True
    single = _SINGLE_REGEX.match(text)
    if single and not text.lstrip().startswith("("):
        field, op, value = single.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return _comparison(field, op, value)
    try:
        return _Parser(text).parse()
    except re.error:
        raise _bad(text) from None


def _token(query: dict, offset: int) -> str:
    blob = json.dumps({"q": _query_key(query), "o": offset}).encode()
    return base64.urlsafe_b64encode(blob).decode()


def _query_key(query: dict) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]


def page(items: list[dict], params: dict, *, sort_key: str = "name") -> tuple[list[dict], str]:
    """Filter, order and cut one page; returns (items, nextPageToken or "")."""
    text = params.get("filter")
    order = params.get("orderBy")
    if order not in (None, "", "name", "creationTimestamp desc"):
        raise invalid("orderBy", order, "Only 'name' and 'creationTimestamp desc' are "
                      "supported.")
    raw_max = params.get("maxResults") or "0"
    try:
        max_results = int(raw_max)
    except ValueError:
        raise invalid("maxResults", raw_max, "Must be an integer.") from None
    if not 0 <= max_results <= MAX_RESULTS:
        raise invalid("maxResults", raw_max,
                      f"Must be greater than or equal to 0 and less than or equal to "
                      f"{MAX_RESULTS}.")
    max_results = max_results or MAX_RESULTS
    predicate = parse_filter(text)
    chosen = [item for item in items if predicate(item)]
    if order == "creationTimestamp desc":
        chosen.sort(key=lambda item: item.get("creationTimestamp", ""), reverse=True)
    else:
        chosen.sort(key=lambda item: item.get(sort_key, ""))
    query = {"filter": text or "", "orderBy": order or ""}
    offset = 0
    if params.get("pageToken"):
        try:
            decoded = json.loads(base64.urlsafe_b64decode(params["pageToken"]))
            assert decoded["q"] == _query_key(query)
            offset = int(decoded["o"])
        except Exception:
            raise invalid("pageToken", params["pageToken"], "Invalid page token.") from None
    selected = chosen[offset:offset + max_results]
    more = offset + max_results < len(chosen)
    return selected, _token(query, offset + max_results) if more else ""

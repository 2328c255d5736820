"""Small rules shared by every kind: required fields, label format and fingerprints, RFC 7396
merge patches (what ``patch`` methods use: "This method supports PATCH semantics and uses the
JSON merge patch format and processing rules")."""

from __future__ import annotations

import re

from . import errors
from .links import fingerprint

_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}\Z")
OUTPUT_ONLY = ("kind", "id", "creationTimestamp", "selfLink", "fingerprint", "labelFingerprint",
               "status", "users", "usedBy", "zone", "region", "size", "currentActions")


def require(body: dict, fields: tuple[str, ...], prefix: str = "resource") -> None:
    for field in fields:
        node = body
        for part in field.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, "", [], {}):
            raise errors.required(f"{prefix}.{field}")


def check_labels(labels: object, field: str = "resource.labels") -> dict:
    if labels in (None, {}):
        return {}
    if not isinstance(labels, dict) or len(labels) > 64:
        raise errors.invalid(field, labels, "A resource can have at most 64 labels.")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise errors.invalid(field, "", f"Label key '{key}' violates format constraints. "
                                 "The key must start with a lowercase character, can only "
                                 "contain lowercase letters, numeric characters, underscores "
                                 "and dashes. The key can be at most 63 characters long.")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            raise errors.invalid(field, "", f"Label value '{value}' violates format "
                                 "constraints. The value can only contain lowercase letters, "
                                 "numeric characters, underscores and dashes. The value can be "
                                 "at most 63 characters long.")
    return dict(labels)


def set_labels(body: dict, labels: dict) -> None:
    if labels:
        body["labels"] = dict(labels)
    else:
        body.pop("labels", None)
    body["labelFingerprint"] = fingerprint(labels)


def refresh_fingerprint(body: dict) -> None:
    body["fingerprint"] = fingerprint({k: v for k, v in body.items() if k not in OUTPUT_ONLY})


def check_fingerprint(given: str | None, current: str | None, *, labels: bool = False) -> None:
    """412 conditionNotMet unless ``given`` is the current fingerprint."""
    if given != current:
        raise errors.bad_label_fingerprint() if labels else errors.bad_fingerprint()


def merge_patch(target: dict, patch: dict) -> dict:
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out

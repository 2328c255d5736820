"""Names, links and places: selfLinks, full or partial references, RFC 1035 names, the zones and
regions the fake knows, ids, fingerprints and timestamps in the forms Compute Engine writes."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .errors import invalid

# selfLinks always use this base, as GCE writes them, whatever host served the request.
API = "https://www.googleapis.com/compute/v1/"
_PREFIXES = (API, "https://compute.googleapis.com/compute/v1/",
             "http://www.googleapis.com/compute/v1/")

NAME_PATTERN = "(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)"
_NAME = re.compile(NAME_PATTERN + r"\Z")

# Regions, their zones and the default network's auto-mode subnet ranges (as GCE allocates them).
REGIONS = {
    "us-central1": (("a", "b", "c", "f"), "10.128.0.0/20"),
    "us-east1": (("b", "c", "d"), "10.142.0.0/20"),
    "us-west1": (("a", "b", "c"), "10.138.0.0/20"),
    "europe-west1": (("b", "c", "d"), "10.132.0.0/20"),
    "europe-west4": (("a", "b", "c"), "10.164.0.0/20"),
    "asia-east1": (("a", "b", "c"), "10.140.0.0/20"),
}
ZONES = {f"{region}-{suffix}": region
         for region, (suffixes, _) in REGIONS.items() for suffix in suffixes}


@dataclass(frozen=True)
class Ref:
    """A parsed reference ``projects/{project}/{scope}/{collection}/{name}``."""

    project: str
    scope: str          # "global", "regions/<r>" or "zones/<z>"
    collection: str
    name: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/{self.scope}/{self.collection}/{self.name}"

    @property
    def link(self) -> str:
        return API + self.path


def scope_link(project: str, scope: str) -> str:
    return f"{API}projects/{project}/{scope}"


def parse_ref(value: object, project: str) -> Ref | None:
    """A full or partial URL as the API accepts them, or None when it is not one."""
    if not isinstance(value, str):
        return None
    text = value
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if text.startswith(("global/", "regions/", "zones/")):
        text = f"projects/{project}/{text}"
    parts = text.split("/")
    if len(parts) == 5 and parts[0] == "projects" and parts[2] == "global":
        return Ref(parts[1], "global", parts[3], parts[4])
    if len(parts) == 6 and parts[0] == "projects" and parts[2] in ("regions", "zones"):
        return Ref(parts[1], f"{parts[2]}/{parts[3]}", parts[4], parts[5])
    return None


def check_name(name: object, field: str = "resource.name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise invalid(field, name if name is not None else "",
                      f"Must be a match of regex '{NAME_PATTERN}'")
    return name


def region_of(scope: str) -> str | None:
    kind, _, where = scope.partition("/")
    if kind == "regions":
        return where
    if kind == "zones":
        return ZONES[where]
    return None


def new_id() -> str:
    """A uint64 id, written as a decimal string like GCE does."""
    return str(random.randrange(10 ** 18, 2 ** 63))


_last_stamp = [datetime.min.replace(tzinfo=timezone.utc)]
_stamp_lock = threading.Lock()


def now() -> str:
    """RFC 3339 with milliseconds and an offset, e.g. ``2024-06-26T11:42:22.006-07:00``;
    strictly increasing, so ``orderBy=creationTimestamp desc`` has no ties."""
    with _stamp_lock:
        stamp = max(datetime.now(timezone.utc), _last_stamp[0] + timedelta(milliseconds=1))
        _last_stamp[0] = stamp
    return stamp.astimezone().isoformat(timespec="milliseconds")


def operation_name() -> str:
    millis = int(time.time() * 1000)
    return (f"operation-{millis}-{random.getrandbits(52):013x}-{random.getrandbits(32):08x}-"
            f"{random.getrandbits(32):08x}")


EMPTY_LABELS_FINGERPRINT = "42WmSpB8rSM="  # what GCE returns for a resource without labels


def fingerprint(content: object) -> str:
    """A content hash in GCE's form (8 bytes, base64): equal contents, equal fingerprints."""
    if content in ({}, None):
        return EMPTY_LABELS_FINGERPRINT
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).digest()
    return base64.b64encode(digest[:8]).decode()

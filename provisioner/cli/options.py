"""Parsing of flag values that typer cannot express as types."""

from __future__ import annotations

import re

from provisioner.errors import SpecError

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str, flag: str) -> float:
    """'30s', '5m', '1m30s', '90' (seconds) -> seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or not match:
        raise SpecError(f"{flag} {text!r} is not a duration", hint="use e.g. 30s, 5m or 1m30s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds

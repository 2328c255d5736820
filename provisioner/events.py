"""Events: how the engine reports. Views in ``provisioner.cli.views`` render them.

One event per line in ``--json`` mode, so the field names are a public format: ``type``,
``timestamp``, ``level``, ``message``, and where they apply ``address``, ``action``,
``elapsed_s`` and ``data``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    timestamp: str
    level: Literal["debug", "info", "warn", "error"] = "info"
    message: str
    address: str | None = None
    action: str | None = None
    elapsed_s: float | None = None
    data: dict[str, Any] | None = None


Emit = Callable[[Event], None]


def make_event(type: str, message: str, **fields: Any) -> Event:
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Event(type=type, timestamp=now, message=message, **fields)


def discard(event: Event) -> None:
    """An emitter for callers that do not listen."""

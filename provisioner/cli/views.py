"""Views render the engine's events: JSON lines, rich progress on a terminal, plain lines else."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from provisioner.events import Event


class JsonView:
    """One JSON object per line on stdout (``--json``)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.stream.write(event.model_dump_json(exclude_none=True) + "\n")
            self.stream.flush()

    def text(self, message: str) -> None:
        """Human text has no place in the JSON stream."""

    def close(self) -> None:
        pass


class PlainView:
    """Plain lines for logs and pipelines without ``--json``."""

    QUIET = {"apply_progress"}

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.type in self.QUIET and event.level == "info":
            return
        stream = sys.stderr if event.level in ("warn", "error") else self.stream
        with self._lock:
            stream.write(f"{event.message}\n")
            stream.flush()

    def text(self, message: str) -> None:
        with self._lock:
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


class RichView(PlainView):
    """A live progress table on a terminal: one row per resource in flight with elapsed time."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console

        self.console = Console()
        self._live = None
        self._rows: dict[str, tuple[str, float, str]] = {}

    def __call__(self, event: Event) -> None:
        with self._lock:
            if event.type == "apply_start" and event.address:
                self._rows[event.address] = (event.action or "", time.monotonic(), "")
                self._ensure_live()
            elif event.type == "apply_progress" and event.address in self._rows:
                action, started, _ = self._rows[event.address]
                detail = event.message.split(": ", 1)[-1]
                self._rows[event.address] = (action, started, detail)
            elif event.type in ("apply_complete", "apply_errored") and event.address:
                self._rows.pop(event.address, None)
                style = "red" if event.type == "apply_errored" else "green"
                self.console.print(f"[{style}]{event.message}[/{style}]", highlight=False)
            elif event.type != "apply_progress":
                style = {"warn": "yellow", "error": "red"}.get(event.level, "")
                message = f"[{style}]{event.message}[/{style}]" if style else event.message
                self.console.print(message, highlight=False)

    def _ensure_live(self) -> None:
        if self._live is None:
            from rich.live import Live

            # One live area for the whole run, re-rendered by rich's own refresh thread;
            # prints go above it, and it disappears when the view is closed.
            self._live = Live(console=self.console, refresh_per_second=4, transient=True,
                              get_renderable=self._table)
            self._live.start()

    def _table(self):
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        for address, (action, started, detail) in sorted(self._rows.items()):
            table.add_row(f"[cyan]{address}[/cyan]", action, f"{now - started:5.1f}s",
                          f"[dim]{detail}[/dim]")
        return table

    def text(self, message: str) -> None:
        with self._lock:
            self.console.print(message, highlight=False, markup=False)

    def close(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None


def make_view(json_mode: bool):
    if json_mode:
        return JsonView()
    if sys.stdout.isatty():
        return RichView()
    return PlainView()

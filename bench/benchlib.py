"""Shared helpers of the benchmarks: time whole processes, print tables, clean up.

Every figure here is the wall clock of a whole process (start, imports, work, exit) measured
from the parent with :func:`time.perf_counter`, because that is what a user or a pipeline waits
for. Nothing here asserts on a timing: benchmarks report, tests assert.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A benchmark could not measure what it set out to (a command failed, a tool is missing)."""


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks (cleanup) still run."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def executable(name: str) -> str:
    """The real console script ``name`` of this interpreter's environment.

    Preferred over ``shutil.which`` because a version manager's shim (pyenv puts a bash script
    first on PATH) adds its own start-up to every run and would blur the comparison.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name!r} is not installed (not beside {sys.executable}, not on PATH)")
    return found


@dataclass
class Run:
    seconds: float
    code: int | None  # None: killed after the timeout
    stdout: str
    stderr: str

    def tail(self, lines: int = 15) -> str:
        text = (self.stderr.strip() + "\n" + self.stdout.strip()).strip()
        return "\n".join(text.splitlines()[-lines:])


def run(argv: Sequence[str], cwd: Path | None = None, timeout: float | None = None,
        env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` to completion and return its wall time, exit code and output."""
    started = time.perf_counter()
    try:
        done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as expired:  # subprocess.run has killed the child
        return Run(time.perf_counter() - started, None, _text(expired.stdout), _text(expired.stderr))
    return Run(time.perf_counter() - started, done.returncode, done.stdout, done.stderr)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


@dataclass
class Timing:
    """Several timed runs of one command."""

    label: str
    runs: list[Run] = field(default_factory=list)
    expected: tuple[int, ...] = (0,)

    @property
    def times(self) -> list[float]:
        return [r.seconds for r in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    @property
    def unexpected(self) -> list[Run]:
        return [r for r in self.runs if r.code not in self.expected]

    def note(self) -> str:
        """Empty when every run exited as expected, else a short warning for the table."""
        bad = self.unexpected
        if not bad:
            return ""
        codes = sorted({str(r.code) for r in bad})
        return f"! {len(bad)}/{len(self.runs)} exited {','.join(codes)}"


def time_command(label: str, argv: Sequence[str], runs: int, *, cwd: Path | None = None,
                 warmup: int = 1, expected: tuple[int, ...] = (0,),
                 timeout: float | None = 300, env: dict[str, str] | None = None) -> Timing:
    """Run ``argv`` ``warmup`` times untimed (bytecode and page caches), then ``runs`` times."""
    for _ in range(warmup):
        run(argv, cwd=cwd, timeout=timeout, env=env)
    timing = Timing(label, expected=expected)
    for _ in range(runs):
        timing.runs.append(run(argv, cwd=cwd, timeout=timeout, env=env))
    for bad in timing.unexpected[:1]:
        print(f"  warning: {label}: exit {bad.code} (expected {expected}); output ends with:",
              file=sys.stderr)
        print(_indent(bad.tail(), "    "), file=sys.stderr)
    return timing


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "",
          align: str = "") -> str:
    """A plain text table; ``align`` has one letter per column, l or r (default: first column
    left, the others right). Columns with no text at all are left out."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    keep = [i for i in range(len(headers)) if any(row[i] for row in cells)]
    cells = [[row[i] for i in keep] for row in cells]
    align = "".join(align[i] for i in keep)
    widths = [max(len(row[i]) for row in cells) for i in range(len(keep))]

    def line(row: list[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out.append(line(cells[0]))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(row) for row in cells[1:])
    return "\n".join(out)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def machine_header(name: str) -> str:
    """Who measured what where: date, interpreter, cores and load (other work skews timings)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join([
        f"== {name}",
        f"date      {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"python    {platform.python_version()} ({sys.executable})",
        f"machine   {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load}",
    ])

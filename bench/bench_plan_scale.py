"""How plan and apply grow with the number of resources, on the ``memory`` provider.

    python bench/bench_plan_scale.py                      # 250, 500, 1000, 2000 (about 2-3 min)
    python bench/bench_plan_scale.py --sizes 250 1000 --apply-cap 0   # no cap on apply

For each size, in a fresh temp dir, a synthetic spec: one ``net`` and the other N-1 resources in
four groups that depend on each other (node -> net, disk -> node, svc -> node + disk,
route -> svc + net), so the graph has about 1.5 edges per resource. Timed as whole processes:

- ``plan`` on an empty state (everything is a create; exit 2 expected),
- ``apply --auto-approve --parallelism 50`` once (through the journal; its time is reported),
- ``plan`` and ``plan --no-refresh`` on the populated state (no changes; exit 0 expected).

Goals: plan under 1 s at 1,000 resources, and growth close to linear. Apply grows faster than
that today, so apply has a cap (``--apply-cap``): a size whose apply is predicted (from the
growth seen so far) or found to take longer is reported as such, and its no-op plans are skipped.
Last, cProfile of the plans at the largest size, so the hot spots are visible.
"""

from __future__ import annotations

import argparse
import math
import pstats
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    REPO,
    BenchError,
    Run,
    Timing,
    exit_cleanly_on_sigterm,
    executable,
    machine_header,
    run,
    seconds,
    table,
    time_command,
)

SIZES = (250, 500, 1000, 2000)
PLAN_GOAL_S = 1.0  # at GOAL_SIZE resources
GOAL_SIZE = 1000
GROUPS = (("node", ("net",)), ("disk", ("node",)), ("svc", ("node", "disk")),
          ("route", ("svc", "net")))


def spec_text(size: int) -> str:
    """A memory spec of exactly ``size`` resources (one net + the rest split over GROUPS)."""
    each, extra = divmod(size - 1, len(GROUPS))
    lines = ["version: 1", f"name: bench-scale-{size}", "provider: memory", "cluster:",
             "  resources:", "    - name: net", "      attributes: {cidr: 10.0.0.0/16}"]
    for i, (name, depends_on) in enumerate(GROUPS):
        lines += [
            f"    - name: {name}",
            f"      count: {each + (1 if i < extra else 0)}",
            f"      depends_on: [{', '.join(depends_on)}]",
            "      attributes: {size: small, zone: a, tags: [bench, " + name + "]}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Row:
    size: int
    create: Timing | None = None
    noop: Timing | None = None
    noop_no_refresh: Timing | None = None
    apply: Run | None = None
    apply_note: str = ""
    notes: list[str] = field(default_factory=list)


def runs_for(size: int, runs: int | None) -> int:
    return runs if runs is not None else (5 if size <= 500 else 3)


def bench_size(size: int, root: Path, runs: int, apply_cap: float, previous: list[Row],
               profile_create: bool) -> tuple[Row, Path | None]:
    """Measure one size; returns the row and the spec dir when its state is populated."""
    provisioner = executable("provisioner")
    spec_dir = root / f"size-{size}"
    spec_dir.mkdir()
    (spec_dir / "cluster.yaml").write_text(spec_text(size))
    row = Row(size)
    print(f"\n[{size} resources]", flush=True)

    row.create = time_command("plan (create)", [provisioner, "plan", "--detailed-exitcode"], runs,
                              cwd=spec_dir, expected=(2,))
    planned = re.search(r"Plan: (\d+) to add", row.create.runs[0].stdout)
    if not planned or int(planned.group(1)) != size:
        row.notes.append(f"plan did not show {size} to add: {planned and planned.group(0)!r}")
    print(f"  plan (create): median {row.create.median:.3f} s", flush=True)
    if profile_create:
        profile(spec_dir, f"plan, empty state (all {size} creates)")

    predicted = predict_apply(size, previous)
    if apply_cap and predicted is not None and predicted > apply_cap:
        row.apply_note = f"skipped: predicted ~{predicted:.0f} s > cap {apply_cap:.0f} s"
        print(f"  apply {row.apply_note}", flush=True)
        return row, None
    row.apply = run([provisioner, "apply", "--auto-approve", "--parallelism", "50"], cwd=spec_dir,
                    timeout=apply_cap or None)
    if row.apply.code is None:
        row.apply_note = f"> cap {apply_cap:.0f} s (killed)"
        print(f"  apply {row.apply_note}", flush=True)
        return row, None
    if row.apply.code != 0:
        raise BenchError(f"apply of {size} resources exited {row.apply.code}:\n{row.apply.tail()}")
    print(f"  apply: {row.apply.seconds:.1f} s", flush=True)

    row.noop = time_command("plan (no-op)", [provisioner, "plan", "--detailed-exitcode"], runs,
                            cwd=spec_dir, warmup=0, expected=(0,))
    row.noop_no_refresh = time_command(
        "plan --no-refresh (no-op)", [provisioner, "plan", "--no-refresh", "--detailed-exitcode"],
        runs, cwd=spec_dir, warmup=0, expected=(0,))
    print(f"  plan (no-op): median {row.noop.median:.3f} s, --no-refresh "
          f"{row.noop_no_refresh.median:.3f} s", flush=True)
    return row, spec_dir


def predict_apply(size: int, previous: list[Row]) -> float | None:
    """Apply time at ``size`` extrapolated from the last two measured sizes (power law)."""
    done = [(r.size, r.apply.seconds) for r in previous if r.apply and r.apply.code == 0]
    if not done:
        return None
    if len(done) == 1:
        exponent = 2.0  # one point: assume quadratic, the cautious guess
    else:
        (n1, t1), (n2, t2) = done[-2:]
        exponent = max(1.0, math.log(t2 / t1) / math.log(n2 / n1))
    n, t = done[-1]
    return t * (size / n) ** exponent


def growth(rows: list[Row], value) -> list[str]:
    """``value(row)`` of each row as a multiple of the first row's."""
    base = value(rows[0])
    return [("-" if base is None or value(r) is None else f"x{value(r) / base:.2f}") for r in rows]


def exponent(rows: list[Row], value) -> str:
    """k in time ~ size^k between the first and the last row that have a value (1 = linear)."""
    have = [r for r in rows if value(r) is not None]
    if len(have) < 2:
        return "-"
    first, last = have[0], have[-1]
    return f"{math.log(value(last) / value(first)) / math.log(last.size / first.size):.2f}"


def linear_fit(rows: list[Row], value) -> str:
    """``a s + b ms/resource``: least squares over the rows that have a value."""
    points = [(r.size, value(r)) for r in rows if value(r) is not None]
    if len(points) < 2:
        return ""
    mean_n = sum(n for n, _ in points) / len(points)
    mean_t = sum(t for _, t in points) / len(points)
    slope = (sum((n - mean_n) * (t - mean_t) for n, t in points)
             / sum((n - mean_n) ** 2 for n, _ in points))
    return f"{mean_t - slope * mean_n:.2f} s + {1000 * slope:.2f} ms/resource"


def report(rows: list[Row]) -> None:
    def med(attr: str):
        return lambda r: getattr(r, attr).median if getattr(r, attr) else None

    def cell(t: Timing | None) -> str:
        return "-" if t is None else f"{t.median:.3f} / {t.min:.3f}" + (" " + t.note() if t.note() else "")

    def apply_s(r: Row):
        return r.apply.seconds if r.apply and r.apply.code == 0 else None

    create_g, noop_g, norefresh_g = growth(rows, med("create")), growth(rows, med("noop")), \
        growth(rows, med("noop_no_refresh"))
    apply_g = growth(rows, apply_s)
    table_rows = [
        [f"{r.size:,}", f"x{r.size / rows[0].size:.0f}", cell(r.create), create_g[i], cell(r.noop),
         noop_g[i], cell(r.noop_no_refresh), norefresh_g[i],
         seconds(apply_s(r)) if apply_s(r) is not None else r.apply_note or "-", apply_g[i]]
        for i, r in enumerate(rows)
    ]
    table_rows.append(["k (t ~ n^k)", "1.00", exponent(rows, med("create")), "",
                       exponent(rows, med("noop")), "", exponent(rows, med("noop_no_refresh")), "",
                       exponent(rows, apply_s), ""])
    print(table(
        ["resources", "size", "plan create s", "growth", "plan no-op s", "growth",
         "plan no-op --no-refresh s", "growth", "apply s (p=50)", "growth"],
        table_rows,
        title="\n-- plan and apply by size, whole process: median / min of the runs; growth is "
              f"the median over the {rows[0].size} row's (linear = the size column)"))
    fits = [f"{label} {fit}" for label, attr in (("create", "create"), ("no-op", "noop"),
                                                  ("no-op --no-refresh", "noop_no_refresh"))
            if (fit := linear_fit(rows, med(attr)))]
    if fits:
        print("fixed + per-resource cost (least squares over the sizes): " + "; ".join(fits))
    for r in rows:
        for note in r.notes:
            print(f"note ({r.size}): {note}")
    goal = next((r for r in rows if r.size == GOAL_SIZE), None)
    if goal is not None:
        verdicts = []
        for label, t in (("create", goal.create), ("no-op", goal.noop),
                         ("no-op --no-refresh", goal.noop_no_refresh)):
            if t is not None:
                verdicts.append(f"{label} {t.median:.3f} s {'PASS' if t.median < PLAN_GOAL_S else 'MISS'}")
        print(f"goal: plan < {PLAN_GOAL_S:g} s at {GOAL_SIZE:,} resources: " + ", ".join(verdicts))


# -- profiles ---------------------------------------------------------------------------------


def profile(spec_dir: Path, what: str, top: int = 15, top_self: int = 10,
            extra: tuple[str, ...] = ()) -> None:
    """cProfile of one ``plan`` in ``spec_dir`` (main thread: plan does its work there)."""
    out = spec_dir / "plan.prof"
    result = run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "provisioner", "plan",
                  "--detailed-exitcode", *extra], cwd=spec_dir, timeout=600)
    if not out.is_file():
        raise BenchError(f"cProfile of plan wrote no profile (exit {result.code}):\n{result.tail()}")
    stats = pstats.Stats(str(out))
    entries = list(stats.stats.items())  # type: ignore[attr-defined]
    total = max(ct for _, (_, _, _, ct, _) in entries)
    # By cumulative time the top is the chain every run goes through (runpy, typer, click), so
    # that list keeps the project's own code; by self time everything counts.
    own = [e for e in entries if is_project_code(e[0][0])]
    label = f"{what}{' ' + ' '.join(extra) if extra else ''}"
    for title, pool, index, count in (
            ("cumulative time, project code only", own, 3, top),
            ("self time (tottime), everything", entries, 2, top_self)):
        if not count:
            continue
        ranked = sorted(pool, key=lambda e: e[1][index], reverse=True)[:count]
        rows = [[where(key), f"{nc:,}" if nc == cc else f"{nc:,}/{cc:,}", f"{tt:.3f}", f"{ct:.3f}",
                 f"{100 * ct / total:.0f}%"] for key, (cc, nc, tt, ct, _) in ranked]
        print(table(["function", "calls", "self s", "cumulative s", "of run"], rows,
                    title=f"\n-- cProfile: {label} - top {count} by {title} "
                          f"(profiled run {result.seconds:.2f} s, exit {result.code})"))
    by_package: dict[str, float] = {}
    for key, (_, _, tt, _, _) in entries:
        package = where(key).split("/", 1)[0] if key[0] != "~" else "(builtins)"
        package = "stdlib" if package.startswith("<frozen") else package
        by_package[package] = by_package.get(package, 0.0) + tt
    ranked_packages = sorted(by_package.items(), key=lambda item: item[1], reverse=True)[:6]
    print("self time by package: " + ", ".join(f"{name} {100 * tt / total:.0f}%"
                                                for name, tt in ranked_packages))


def is_project_code(filename: str) -> bool:
    entry_points = ("provisioner/__main__.py", "provisioner/cli/__init__.py")
    return filename.startswith(str(REPO) + "/") and not filename.endswith(entry_points)


def where(key: tuple[str, int, str]) -> str:
    """``path:line(function)`` with the path shortened to the repo, site-packages or stdlib."""
    filename, line, function = key
    if filename == "~":
        return function  # a builtin, e.g. <method 'read' of '_io.FileIO' objects>
    path = filename
    for marker in (str(REPO) + "/", "site-packages/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("/lib/python3."):
                path = "stdlib/" + path.split("/", 1)[1]
            break
    return f"{path}:{line}({function})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=None,
                        help="timed runs of each plan (default: 5 up to 500 resources, else 3)")
    parser.add_argument("--apply-cap", type=float, default=90.0,
                        help="seconds an apply may take (predicted or real); 0 = no cap")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    print(machine_header("bench_plan_scale"))
    sizes = sorted(args.sizes)
    root = Path(tempfile.mkdtemp(prefix="bench-plan-scale-"))
    rows: list[Row] = []
    try:
        populated: tuple[int, Path] | None = None  # the largest size whose state is populated
        for size in sizes:
            row, spec_dir = bench_size(size, root, runs_for(size, args.runs), args.apply_cap, rows,
                                       profile_create=size == sizes[-1])
            rows.append(row)
            if spec_dir is not None:
                if populated is not None:
                    shutil.rmtree(populated[1], ignore_errors=True)  # keep the disk small
                populated = (size, spec_dir)
            elif size != sizes[-1]:
                shutil.rmtree(root / f"size-{size}", ignore_errors=True)
        report(rows)
        if populated is not None:
            size = populated[0]
            profile(populated[1], f"plan, populated state, no changes ({size} resources)")
            profile(populated[1], f"plan, populated state, no changes ({size} resources)",
                    top=0, extra=("--no-refresh",))
    except BenchError as error:
        if rows:
            report(rows)
        print(f"\nbench_plan_scale: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

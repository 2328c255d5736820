"""How fast the command line answers: ``--help`` against Ray's CLI, and a no-op plan against
``serve status`` on a real local Ray head (with ``--with-ray``).

    python bench/bench_cli.py              # --help, import profile (about 1 minute)
    python bench/bench_cli.py --with-ray   # also apply the quickstart, time no-op plans, destroy

Whole processes, wall clock, median and min of several runs after one untimed warm-up run.
Goal: ``provisioner --help`` under 0.5 s (median). The alternative is Ray's cluster launcher CLI
(``ray --help``); ``python -c pass`` is the floor no Python CLI can beat.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import (
    REPO,
    BenchError,
    exit_cleanly_on_sigterm,
    executable,
    machine_header,
    run,
    seconds,
    table,
    time_command,
)

HELP_GOAL_S = 0.5
QUICKSTART = REPO / "examples" / "quickstart"
PORT_VARS = ("gcs_port", "dashboard_port", "http_port", "client_server_port",
             "dashboard_agent_port")


# -- (a) --help ----------------------------------------------------------------------------


def bench_help(runs: int) -> None:
    python = sys.executable
    provisioner = executable("provisioner")
    commands = [
        ("python -c pass (floor)", [python, "-c", "pass"]),
        ("provisioner --help", [provisioner, "--help"]),
        ("python -m provisioner --help", [python, "-m", "provisioner", "--help"]),
        ("ray --help (alternative)", [executable("ray"), "--help"]),
    ]
    timings = [time_command(label, argv, runs) for label, argv in commands]
    floor = timings[0].median
    ours = timings[1]
    rows = [
        [t.label, len(t.runs), seconds(t.median), seconds(t.min), seconds(t.max),
         seconds(t.median - floor), f"{t.median / ours.median:.2f}", t.note()]
        for t in timings
    ]
    print(table(["command", "runs", "median s", "min s", "max s", "above floor s",
                 "x provisioner", ""], rows,
                title=f"\n-- (a) --help, whole process, {runs} runs each after 1 warm-up"))
    verdict = "PASS" if ours.median < HELP_GOAL_S else "MISS"
    ray = timings[3]
    print(f"\ngoal: provisioner --help median < {HELP_GOAL_S} s: {ours.median:.3f} s -> {verdict}")
    print(f"ray --help / provisioner --help (median): {ray.median / ours.median:.1f}x")
    print(f"executables: {provisioner}, {commands[3][1][0]} (the real scripts, not a version "
          "manager's shim, which adds its own start-up)")


def import_profile(runs: int = 3, top: int = 10) -> None:
    """``python -X importtime -m provisioner --help``: the imports that dominate start-up.

    Median over ``runs`` runs per module, so one slow disk read does not top the list. What
    ``site`` imports (``.pth`` files of this machine) runs in every Python process, ``python -c
    pass`` included, so it is shown apart from the program's own imports.
    """
    cumulative: dict[str, list[int]] = {}
    own: dict[str, list[int]] = {}
    parents: dict[str, str] = {}
    site_total, program_total = [], []
    for _ in range(runs):
        result = run([sys.executable, "-X", "importtime", "-m", "provisioner", "--help"])
        if result.code != 0:
            raise BenchError(f"python -X importtime -m provisioner --help exited {result.code}:\n"
                             + result.tail())
        entries = parse_importtime(result.stderr)
        site = program = 0
        for name, self_us, cum_us, parent, root in entries:
            if parent is None:
                if root == "site":
                    site += cum_us
                else:
                    program += cum_us
            if root == "site":
                continue
            cumulative.setdefault(name, []).append(cum_us)
            own.setdefault(name, []).append(self_us)
            parents[name] = parent or "(the program)"
        site_total.append(site)
        program_total.append(program)

    def ms(values: list[int]) -> float:
        return statistics.median(values) / 1000

    ranked = sorted(cumulative, key=lambda name: ms(cumulative[name]), reverse=True)[:top]
    rows = [[name, parents[name], f"{ms(cumulative[name]):.1f}", f"{ms(own[name]):.1f}"]
            for name in ranked]
    print(table(["module", "imported by", "cumulative ms", "self ms"], rows, align="llrr",
                title=f"\n-- python -X importtime -m provisioner --help: top {top} imports by "
                      f"cumulative time (median of {runs} runs)"))
    print(f"imports of the program: {ms(program_total):.1f} ms; imports by site (.pth files, "
          f"in every Python process): {ms(site_total):.1f} ms")


def parse_importtime(stderr: str) -> list[tuple[str, int, int, str | None, str]]:
    """(module, self us, cumulative us, importer or None, top-level importer) per import.

    ``-X importtime`` prints a module after everything it imported, indented by depth, so a
    line's children are the deeper lines just before it.
    """
    rows: list[list] = []
    waiting: list[tuple[int, int]] = []  # (depth, row) of lines whose importer is not seen yet
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not match:
            continue
        self_us, cum_us, indent, name = match.groups()
        depth = len(indent) // 2
        index = len(rows)
        rows.append([name, int(self_us), int(cum_us), None])
        while waiting and waiting[-1][0] > depth:
            child_depth, child = waiting.pop()
            if child_depth == depth + 1:
                rows[child][3] = index
        waiting.append((depth, index))

    def root(index: int) -> str:
        while rows[index][3] is not None:
            index = rows[index][3]
        return rows[index][0]

    return [(name, self_us, cum_us, None if parent is None else rows[parent][0], root(i))
            for i, (name, self_us, cum_us, parent) in enumerate(rows)]


# -- (b) no-op plan on a real local Ray head ------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def bench_plan_with_ray(runs: int) -> None:
    provisioner = executable("provisioner")
    serve = executable("serve")
    ports = dict(zip(PORT_VARS, free_ports(len(PORT_VARS))))
    variables = [arg for name, port in ports.items() for arg in ("--var", f"{name}={port}")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-cli-ray-"))
    print(f"\n-- (b) no-op plan of the quickstart on a local Ray head ({workdir})")
    print("ports: " + ", ".join(f"{name}={port}" for name, port in ports.items()))
    spec_dir = workdir / "quickstart"
    try:
        shutil.copytree(QUICKSTART, spec_dir,
                        ignore=shutil.ignore_patterns(".provisioner", "__pycache__", "*.plan"))
        applied = run([provisioner, "apply", "--auto-approve", *variables], cwd=spec_dir,
                      timeout=420)
        if applied.code != 0:
            status = "timed out after 420 s" if applied.code is None else f"exit {applied.code}"
            raise BenchError(
                f"provisioner apply of the quickstart failed ({status}) after "
                f"{applied.seconds:.1f} s, so there is nothing to plan against. Is the local "
                f"provider finished? Its output ends with:\n{applied.tail(25)}")
        print(f"apply (start Ray head + deploy apps): {applied.seconds:.1f} s")

        dashboard = f"http://127.0.0.1:{ports['dashboard_port']}"
        timings = [
            time_command("provisioner plan --detailed-exitcode",
                         [provisioner, "plan", "--detailed-exitcode", *variables], runs,
                         cwd=spec_dir, expected=(0,)),
            time_command("provisioner plan --no-refresh --detailed-exitcode",
                         [provisioner, "plan", "--no-refresh", "--detailed-exitcode", *variables],
                         runs, cwd=spec_dir, expected=(0,)),
            time_command(f"serve status -a {dashboard} (alternative)",
                         [serve, "status", "-a", dashboard], runs, cwd=spec_dir),
        ]
        ours = timings[0]
        rows = [[t.label, len(t.runs), seconds(t.median), seconds(t.min), seconds(t.max),
                 f"{t.median / ours.median:.2f}", t.note()] for t in timings]
        print(table(["command", "runs", "median s", "min s", "max s", "x plan", ""], rows,
                    title=f"\nno-op plan vs serve status, {runs} runs each after 1 warm-up "
                          "(plan exit 0 = no changes expected)"))
        if ours.unexpected:
            print("note: a plan right after apply should show no changes (exit 0); see the "
                  "warning above", file=sys.stderr)
    finally:
        # Always, even when apply failed half way: destroy removes whatever state recorded.
        # When destroy fails the temp dir stays: its state is needed to finish by hand.
        if cleanup_ray(provisioner, spec_dir, variables, workdir):
            shutil.rmtree(workdir, ignore_errors=True)


def cleanup_ray(provisioner: str, spec_dir: Path, variables: list[str], workdir: Path) -> bool:
    """``provisioner destroy``; on failure say how to finish by hand. True when clean."""
    if not spec_dir.is_dir():
        return True  # failed before the copy: nothing was started
    destroyed = run([provisioner, "destroy", "--auto-approve", *variables], cwd=spec_dir,
                    timeout=300)
    if destroyed.code == 0:
        print(f"destroy: {destroyed.seconds:.1f} s")
        return True
    if not (spec_dir / ".provisioner" / "state.json").exists():
        # Apply records every resource in state before creating it (the journal), so with no
        # state file nothing was created and there is nothing to keep the temp dir for.
        print(f"destroy exited {destroyed.code}, but no state was ever written: nothing to clean up",
              file=sys.stderr)
        return True
    print(f"\nCLEANUP FAILED: provisioner destroy exited {destroyed.code}; the Ray head may still "
          f"run. Finish by hand:\n  cd {spec_dir} && {provisioner} destroy --auto-approve "
          + " ".join(variables) + f"\n  rm -rf {workdir}\n"
          f"destroy output ends with:\n{destroyed.tail(25)}", file=sys.stderr)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each --help")
    parser.add_argument("--with-ray", action="store_true",
                        help="also apply the quickstart on a local Ray head and time no-op plans")
    parser.add_argument("--ray-runs", type=int, default=5, help="timed runs of each no-op plan")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    print(machine_header("bench_cli"))
    try:
        bench_help(args.runs)
        import_profile()
        if args.with_ray:
            bench_plan_with_ray(args.ray_runs)
        else:
            print("\n(b) no-op plan on a local Ray head: skipped (pass --with-ray)")
    except BenchError as error:
        print(f"\nbench_cli: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line of the test-host harness; see the package docstring (``tests/harness``).

    python -m tests.harness up N [--names a,b,...] [--known-hosts]
    python -m tests.harness down | info
    python -m tests.harness kill NAME [--unplug]
    python -m tests.harness restart NAME [--fresh-host-key]
    python -m tests.harness exec NAME -- COMMAND...

``up``, ``restart`` and ``info`` print JSON; errors go to stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from tests.harness.hosts import Harness
from tests.harness.model import HarnessError, HarnessInfo


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.harness",
                                     description="Test hosts that behave like VMs.")
    parser.add_argument("--prefix", default="prv", help="names of netns/links/root (prv)")
    parser.add_argument("--subnet", default="10.237.0", help="first three octets (10.237.0)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start N hosts and print them as JSON")
    up.add_argument("count", type=int)
    up.add_argument("--names", help="comma-separated host names (default h0..h{N-1})")
    up.add_argument("--known-hosts", action="store_true",
                    help="include the pre-seeded known_hosts file in the JSON")
    commands.add_parser("down", help="remove every host and all traces of them")
    commands.add_parser("info", help="print the running hosts as JSON")
    kill = commands.add_parser("kill", help="lose a host (SIGKILL of its PID namespace)")
    kill.add_argument("name")
    kill.add_argument("--unplug", action="store_true", help="also pull its network cable")
    restart = commands.add_parser("restart", help="bring a host back empty")
    restart.add_argument("name")
    restart.add_argument("--fresh-host-key", action="store_true")
    run = commands.add_parser("exec", help="run a command inside a host")
    run.add_argument("name")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


def _names(count: int, names: str | None) -> list[str]:
    if not names:
        return [f"h{i}" for i in range(count)]
    listed = [name.strip() for name in names.split(",") if name.strip()]
    if len(listed) != count:
        raise HarnessError(f"--names lists {len(listed)} hosts but N is {count}")
    return listed


def _print(info: HarnessInfo, known_hosts: bool) -> None:
    print(json.dumps(info.to_json(known_hosts=known_hosts), indent=2))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    harness = Harness(prefix=args.prefix, subnet=args.subnet)
    if args.command == "up":
        _print(harness.up(_names(args.count, args.names)), args.known_hosts)
    elif args.command == "down":
        harness.down()
    elif args.command == "info":
        _print(harness.info(), True)
    elif args.command == "kill":
        harness.kill(args.name, unplug=args.unplug)
    elif args.command == "restart":
        _print(harness.restart(args.name, fresh_host_key=args.fresh_host_key), True)
    elif args.command == "exec":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        done = harness.exec(args.name, command or ["true"], timeout=3600)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        sys.exit(1)

"""Writer process for the kill test (``test_local_backend.py::test_kill_9_never_corrupts``).

Run as ``python -m tests.state.kill_writer <state path> <lineage>``. It imports everything, says
``ready`` on stdout, waits for a line on stdin (so the test can start it ahead of time and
overlap interpreter start-up with the previous writer's run), then writes successive documents
(:func:`make_doc` of serial+1, +2, ...) as fast as it can until it is killed, saying
``writing <serial>`` before each.
"""

from __future__ import annotations

import sys
from pathlib import Path

from state.document import ResourceRecord, StateDocument
from state.local import LocalBackend

BACKUPS = 3


def make_doc(lineage: str, serial: int) -> StateDocument:
    """The only document the writer ever stores at ``serial``. Big (0.5 to 4 MB, mostly one
    attribute that is cheap to encode) so that most of a write's time goes to writing bytes,
    where a kill hurts; its size varies with the serial so that truncation would show."""
    resources = {
        f"ssh_node.worker[{i}]": ResourceRecord(
            type="ssh_node",
            id=f"node-{serial}-{i}",
            attributes={
                "address": f"10.{serial % 250}.{i // 250}.{i % 250}",
                "labels": {"serial": str(serial), "index": str(i), "pool": "workers"},
            },
            dependencies=["ssh_node.head"],
        )
        for i in range(100 + serial % 50)
    }
    blob = f"{serial:08d}" * (65536 * (1 + serial % 8))
    outputs = {"serial": serial, "blob": blob}
    return StateDocument(lineage=lineage, serial=serial, resources=resources, outputs=outputs)


def main() -> None:
    path, lineage = Path(sys.argv[1]), sys.argv[2]
    backend = LocalBackend(path, backups=BACKUPS)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    snapshot = backend.read()
    serial = 0 if snapshot is None else snapshot.document.serial
    version = None if snapshot is None else snapshot.version
    while True:
        serial += 1
        # Tells the test a write is starting, so that it can aim some kills into writes.
        sys.stdout.write(f"writing {serial}\n")
        sys.stdout.flush()
        version = backend.write(make_doc(lineage, serial), expected_version=version)


if __name__ == "__main__":
    main()

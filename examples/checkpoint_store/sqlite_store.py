"""A custom checkpoint store: every key in one SQLite file.

Use it with ``serve.checkpoint_store: custom://sqlite_store.SQLiteStore/path/to/checkpoints.db``
(this directory on PYTHONPATH, or the module installed). provisioner imports the module, takes
the class, and calls ``SQLiteStore("path/to/checkpoints.db")``; the class implements the three
methods of :class:`provisioner.checkpoint.CheckpointStore`.
"""

from __future__ import annotations

import sqlite3

from provisioner.checkpoint import CheckpointError, CheckpointStore


class SQLiteStore(CheckpointStore):
    def __init__(self, path: str) -> None:
        self.path = path
        self.uri = f"custom://sqlite_store.SQLiteStore/{path}"

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path)
            connection.execute("CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, data BLOB)")
            return connection
        except sqlite3.Error as error:
            raise CheckpointError(f"cannot open {self.path}: {error}") from None

    def read(self, key: str) -> bytes | None:
        with self._connect() as connection:
            row = connection.execute("SELECT data FROM blobs WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def write(self, key: str, data: bytes) -> None:
        # The `with` block commits (durably: SQLite's default synchronous mode) before returning.
        with self._connect() as connection:
            connection.execute("INSERT OR REPLACE INTO blobs (key, data) VALUES (?, ?)",
                               (key, data))

    def list(self, prefix: str) -> list[str]:
        with self._connect() as connection:
            rows = connection.execute("SELECT key FROM blobs WHERE substr(key, 1, ?) = ?",
                                      (len(prefix), prefix)).fetchall()
        return [row[0] for row in rows]

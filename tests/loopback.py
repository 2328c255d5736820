"""The HTTP server under the tests' stand-ins for cloud APIs (the AWS fault proxy, the GCS
precondition layer, the Compute fake): threaded, on a free loopback port, and stopped with every
kept-alive client connection closed, so no handler thread outlives a test."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support import free_ports


class LoopbackServer(ThreadingHTTPServer):
    """``start()`` serves in a daemon thread; ``stop()`` ends it. ``owner`` is the object the
    handlers serve (``self.server.owner``)."""

    daemon_threads = True
    block_on_close = False
    # The default backlog (5) resets connections when a run's threads open many at once; the
    # clients would retry them and a test would miscount its retries.
    request_queue_size = 128

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any, name: str) -> None:
        port = free_ports(1)[0]
        super().__init__(("127.0.0.1", port), handler)
        self.owner = owner
        self.url = f"http://127.0.0.1:{port}"
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{name}-{port}", daemon=True)

    def start(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        # Kept-alive client connections would otherwise hold their handler threads.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class TrackedHandler(BaseHTTPRequestHandler):
    """A handler whose connection :meth:`LoopbackServer.stop` can close."""

    server: LoopbackServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass

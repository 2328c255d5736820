"""Parts for the haproxy_lb tests: tiny HTTP backends standing in for Serve proxies, a client
loop that counts what it gets through the load balancer, and process inspection for clean-up.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Backend:
    """A Serve proxy look-alike: ``/-/healthz`` answers 200 (or 503 when draining), ``/hello``
    answers the backend's name, ``/slow`` does too after ``slow_s``. HTTP/1.1 keep-alive with
    a 90 s idle timeout, like Serve's uvicorn (keep_alive_timeout_s)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.hits = 0
        self.slow_s = 3.0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 90
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/-/healthz":
                    status, body = (200, b"success") if backend.healthy else (503, b"draining")
                elif self.path in ("/hello", "/slow"):
                    if self.path == "/slow":
                        time.sleep(backend.slow_s)
                    with backend._lock:
                        backend.hits += 1
                    status, body = 200, backend.name.encode()
                else:
                    status, body = 404, b"not found"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                conn, addr = super().get_request()
                with backend._lock:
                    backend._connections.add(conn)
                return conn, addr

            def shutdown_request(self, request) -> None:
                with backend._lock:
                    backend._connections.discard(request)
                super().shutdown_request(request)

            def handle_error(self, request, client_address) -> None:
                pass  # HAProxy closes its health checks with a reset: expected, not an error

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self.alive = True

    def spec(self) -> dict:
        return {"name": self.name, "address": "127.0.0.1", "port": self.port}

    def kill(self) -> None:
        """Like a node whose proxy dies: the port refuses and open connections are cut."""
        if not self.alive:
            return
        self.alive = False
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, path: str = "/hello", timeout: float = 5.0) -> tuple[int, str]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@dataclass
class LoopResult:
    requests: int = 0
    by_backend: Counter = field(default_factory=Counter)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, what)
    hits: list[tuple[float, str]] = field(default_factory=list)


class ClientLoop:
    """Requests ``/hello`` through the load balancer back to back, in a thread, until
    ``max_requests`` or ``max_s`` (it always stops by itself) or :meth:`stop`. A failure is an
    exception or a status other than 200. ``keep_alive`` reuses one client connection (opening
    a new one after an error), else each request has its own connection."""

    def __init__(self, url: str, *, max_requests: int = 2000, max_s: float = 10.0,
                 keep_alive: bool = False) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.max_requests, self.max_s, self.keep_alive = max_requests, max_s, keep_alive
        self.result = LoopResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ClientLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoopResult:
        self._stop.set()
        self._thread.join(timeout=self.max_s + 10)
        return self.result

    def wait(self) -> LoopResult:
        self._thread.join(timeout=self.max_s + 10)
        return self.result

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        conn = None
        while (not self._stop.is_set() and time.monotonic() < deadline
               and self.result.requests < self.max_requests):
            now = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                headers = {} if self.keep_alive else {"Connection": "close"}
                conn.request("GET", "/hello", headers=headers)
                response = conn.getresponse()
                body = response.read().decode()
                if response.status == 200:
                    self.result.by_backend[body] += 1
                    self.result.hits.append((now, body))
                else:
                    self.result.failures.append((now, f"HTTP {response.status}"))
                if not self.keep_alive or response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as error:
                self.result.failures.append((now, f"{type(error).__name__}: {error}"))
                if conn is not None:
                    conn.close()
                conn = None
            self.result.requests += 1
        if conn is not None:
            conn.close()


def our_processes(root: Path) -> list[int]:
    """Live processes whose command line mentions ``root`` (our HAProxies: ``-f <root>/...``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(root) + "/" in args and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def kill_by_pid_files(root: Path) -> list[int]:
    """SIGKILL the process group of every master named by a pid file under ``root`` (our
    HAProxies are session leaders, workers share the group) and anything else still naming
    ``root``; return the pids that were alive."""
    killed = []
    for pid_file in root.glob("haproxy/*/haproxy.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid in our_processes(root):
            killed.append(pid)
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
    for pid in our_processes(root):
        killed.append(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while our_processes(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def wait_for(predicate, timeout: float, interval: float = 0.05):
    """Poll ``predicate`` until it returns a true value; return it, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)

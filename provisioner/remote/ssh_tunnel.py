"""Local port forwarding over a pooled SSH connection (``ssh -L``), to reach a service that
listens on an address only the host can reach, such as a Ray dashboard on a private network.

One listener thread accepts on ``127.0.0.1``; each accepted client gets its own ``direct-tcpip``
channel and a pump thread, so concurrent HTTP requests do not queue behind each other. Channels
are opened through the pool at accept time, so the tunnel survives a reconnect of the pool.
"""

from __future__ import annotations

import logging
import select
import socket
import threading

import paramiko

from provisioner.remote.ssh_connect import ConnectionPool
from provisioner.remote.ssh_target import SSHTarget

log = logging.getLogger(__name__)

_POLL_S = 0.2
_CHUNK = 65536


class Forwarder:
    """Listens on ``127.0.0.1:port`` and forwards each connection to ``remote_host:remote_port``
    as seen from the SSH host. ``start()``, then ``close()`` (closes every connection)."""

    def __init__(self, pool: ConnectionPool, target: SSHTarget, remote_host: str, remote_port: int,
                 *, local_port: int = 0, resource_address: str | None = None) -> None:
        self._pool = pool
        self._target = target
        self._remote = (remote_host, int(remote_port))
        self._resource_address = resource_address
        self._stop = threading.Event()
        # Readable once close() writes to it: every select() below watches it, so closing wakes
        # the listener and the pumps at once instead of at their next poll (a CLI run that
        # used a tunnel otherwise waits up to _POLL_S more on exit).
        self._wake, self._waker = socket.socketpair()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._open: set[object] = set()  # sockets and channels, closed on close()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", local_port))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"ssh-tunnel-{self.port}")

    def start(self) -> Forwarder:
        # Connect now, so that a bad target fails here and not in the first request.
        self._pool.transport(self._target, resource_address=self._resource_address)
        self._accepter.start()
        return self

    def close(self) -> None:
        self._stop.set()
        _quiet_send(self._waker)
        if self._accepter.is_alive():
            self._accepter.join()
        self._listener.close()
        with self._lock:
            handles, threads = list(self._open), list(self._threads)
        for handle in handles:
            _quiet_close(handle)
        for thread in threads:
            thread.join(timeout=5)
        _quiet_close(self._wake)
        _quiet_close(self._waker)

    def _accept_loop(self) -> None:
        # Polling with a timeout (not a blocking accept) because closing a socket does not
        # reliably wake a thread blocked in accept() on it.
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener, self._wake], [], [], _POLL_S)
            if self._listener not in ready:
                continue
            try:
                client, peer = self._listener.accept()
            except OSError:
                continue
            thread = threading.Thread(target=self._serve, args=(client, peer), daemon=True,
                                      name=f"ssh-tunnel-{self.port}-conn")
            with self._lock:
                self._threads.add(thread)
                self._open.add(client)
            thread.start()

    def _serve(self, client: socket.socket, peer: tuple) -> None:
        channel = None
        try:
            try:
                channel = self._pool.open_channel(
                    self._target,
                    lambda t: t.open_channel("direct-tcpip", self._remote, peer,
                                             timeout=self._target.connect_timeout_s),
                    resource_address=self._resource_address)
            except Exception as exc:  # noqa: BLE001 — a refused forward closes this client only
                log.debug("tunnel %s -> %s:%s: %s", self.port, *self._remote, exc)
                return
            with self._lock:
                if self._stop.is_set():
                    return
                self._open.add(channel)
            _pump(client, channel, self._stop, self._wake)
        finally:
            _quiet_close(client)
            if channel is not None:
                _quiet_close(channel)
            with self._lock:
                self._open.discard(client)
                self._open.discard(channel)
                self._threads.discard(threading.current_thread())


def _pump(client: socket.socket, channel: paramiko.Channel, stop: threading.Event,
          wake: socket.socket) -> None:
    """Copy both ways until either side closes. A half-close is passed on (HTTP clients may
    shut down writing after the request and still read the response)."""
    client_open, channel_open = True, True
    while not stop.is_set() and (client_open or channel_open):
        watch = [s for s, alive in ((client, client_open), (channel, channel_open)) if alive]
        watch.append(wake)
        try:
            ready, _, _ = select.select(watch, [], [], _POLL_S)
        except (OSError, ValueError):
            return
        try:
            if client in ready:
                data = client.recv(_CHUNK)
                if data:
                    channel.sendall(data)
                else:
                    client_open = False
                    channel.shutdown_write()
            if channel in ready:
                data = channel.recv(_CHUNK)
                if data:
                    client.sendall(data)
                else:
                    return  # the remote side is done: nothing more can come back
        except (OSError, EOFError, paramiko.SSHException):
            return
        if channel.closed:
            return


def _quiet_send(sock: socket.socket) -> None:
    try:
        sock.send(b"x")
    except OSError:
        pass


def _quiet_close(handle: object) -> None:
    try:
        handle.close()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 — closing on the way out
        pass

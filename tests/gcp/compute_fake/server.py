"""The HTTP side: a ThreadingHTTPServer on a loopback port answering the Compute REST paths
(``/compute/v1/projects/{project}/...``) with JSON, the calls it saw, and the knobs tests turn
(:class:`FakeCompute`)."""

from __future__ import annotations

import json
import socket
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

from tests.loopback import LoopbackServer, TrackedHandler

from . import errors, groups
from .clients import make_client
from .errors import ApiError, invalid
from .handlers import Route, handle
from .kinds import KINDS, api_collection
from .links import REGIONS, ZONES
from .network import seed_default_network
from .world import World

_PREFIX = "/compute/v1/projects/"


@dataclass(frozen=True)
class Call:
    http_method: str
    path: str
    api_method: str           # "list", "insert", "resize", "get", "wait", ...
    collection: str           # API reference name, e.g. "regionInstanceGroupManagers"
    url_collection: str       # URL segment, e.g. "instanceGroupManagers"

    def matches(self, method: str | None, collection: str | None) -> bool:
        return ((method is None or method in (self.http_method, self.api_method))
                and (collection is None or collection in (self.collection,
                                                          self.url_collection)))


@dataclass
class _Injection:
    status: int
    method: str | None
    collection: str | None
    left: int


class FakeCompute:
    """A running fake. See the package docstring for how to build clients against it."""

    def __init__(self, world: World, port: int):
        self.world = world
        self.project = world.project
        self.endpoint = f"http://127.0.0.1:{port}"
        self.requests: list[tuple[str, str]] = []
        self.calls: list[Call] = []
        self._injections: list[_Injection] = []

    # -- what tests turn --------------------------------------------------------------------------

    @property
    def operation_polls_before_done(self) -> int:
        return self.world.config.polls_before_done

    @operation_polls_before_done.setter
    def operation_polls_before_done(self, value: int) -> None:
        self.world.config.polls_before_done = value

    @property
    def mig_reads_before_stable(self) -> int:
        return self.world.config.mig_reads_before_stable

    @mig_reads_before_stable.setter
    def mig_reads_before_stable(self, value: int) -> None:
        self.world.config.mig_reads_before_stable = value

    def count(self, method: str | None = None, collection: str | None = None) -> int:
        """Calls seen. ``method``: an HTTP method ("GET") or an API method ("list", "insert",
        "resize", "wait"); ``collection``: the API name ("regionInstanceGroupManagers",
        "globalForwardingRules", "zoneOperations") or the URL segment ("instanceGroupManagers"
        counts zonal and regional ones)."""
        with self.world.lock:
            return sum(call.matches(method, collection) for call in self.calls)

    def inject(self, status: int, *, method: str | None = None, collection: str | None = None,
               times: int = 1) -> None:
        """Answer the next ``times`` matching calls with a Google-shaped error (429: usageLimits
        rateLimitExceeded RESOURCE_EXHAUSTED; 503: backendError UNAVAILABLE; 500; 403)."""
        errors.injected(status, "GET")   # refuses statuses it cannot shape
        with self.world.lock:
            self._injections.append(_Injection(status, method, collection, times))

    def fail_next_insert(self, collection: str, code: str, message: str) -> None:
        """The next insert into ``collection`` (API name or URL segment) returns an operation
        that ends DONE with ``error.errors[{code, message}]`` and the HTTP status GCE gives that
        code (QUOTA_EXCEEDED: 403 FORBIDDEN, ZONE_RESOURCE_POOL_EXHAUSTED: 503 SERVICE
        UNAVAILABLE); the resource never appears. For "instances", a MIG creating a VM consumes
        it too (the VM stays CREATING with lastAttempt.errors, then is retried)."""
        with self.world.lock:
            self.world.failures.setdefault(collection, []).append((code, message))

    def finish_operations(self) -> None:
        """Every running operation ends now (as time passing would do on GCE)."""
        with self.world.lock:
            self.world.operations.finish_all()

    def settle_groups(self) -> None:
        """Every MIG carries out its pending VM creations and deletions now."""
        with self.world.lock:
            groups.settle(self.world)

    @property
    def credentials(self):
        from google.auth.credentials import AnonymousCredentials
        return AnonymousCredentials()

    def client(self, cls):
        """A compute_v1 client of class ``cls`` on this fake, built the way the package
        docstring says (its operation polling stays here too)."""
        return make_client(cls, self.endpoint, self.credentials)

    # -- serving ----------------------------------------------------------------------------------

    def answer(self, http_method: str, raw_path: str, raw_body: bytes) -> tuple[int, dict]:
        url = urlsplit(raw_path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        with self.world.lock:
            self.requests.append((http_method, url.path))
            try:
                route = self._route(http_method, url.path)
                call = Call(http_method, url.path, route.api_method, route.api_collection,
                            route.collection)
                self.calls.append(call)
                self._maybe_inject(call)
                body = json.loads(raw_body) if raw_body else {}
                payload = handle(self.world, route, params, body)
                _check_schema(payload, route)
                return 200, payload
            except ApiError as error:
                return error.code, error.body()
            except Exception:   # a bug in the fake: say so loudly
                error = ApiError(500, "backendError",
                                 f"compute_fake failed: {traceback.format_exc()}")
                return 500, error.body()

    def _route(self, http_method: str, path: str) -> Route:
        if not path.startswith(_PREFIX):
            raise ApiError(404, "notFound", f"The requested URL {path} was not found.")
        parts = path[len(_PREFIX):].split("/")
        project, rest = parts[0], parts[1:]
        if project != self.project:
            raise errors.not_found(f"projects/{project}")
        if rest and rest[0] == "global":
            scope, rest = "global", rest[1:]
        elif len(rest) >= 2 and rest[0] in ("regions", "zones"):
            known = REGIONS if rest[0] == "regions" else ZONES
            if rest[1] not in known:
                raise invalid(rest[0][:-1], rest[1], f"Unknown {rest[0][:-1]}.")
            scope, rest = f"{rest[0]}/{rest[1]}", rest[2:]
        else:
            scope = "global"   # e.g. projects/p/targetHttpProxies/x/setUrlMap
        if not 1 <= len(rest) <= 3 or (rest[0] not in KINDS and rest[0] != "operations"):
            raise errors.unsupported(http_method, path)
        return Route(http_method, scope, rest[0], rest[1] if len(rest) > 1 else None,
                     rest[2] if len(rest) > 2 else None)

    def _maybe_inject(self, call: Call) -> None:
        for injection in self._injections:
            if injection.left > 0 and call.matches(injection.method, injection.collection):
                injection.left -= 1
                raise errors.injected(injection.status, call.http_method)


def _check_schema(payload: dict, route: Route) -> None:
    """Every answer must parse as the API's message with no unknown field (catches fake bugs the
    client would silently drop)."""
    from google.cloud import compute_v1
    from google.protobuf import json_format

    kind = payload.get("kind", "")
    if kind.startswith("compute#"):
        name = kind.split("#", 1)[1]
        cls = getattr(compute_v1, name[0].upper() + name[1:])
    elif route.api_method == "listManagedInstances":
        cls = compute_v1.InstanceGroupManagersListManagedInstancesResponse
    else:
        return
    json_format.ParseDict(payload, cls.pb()(), ignore_unknown_fields=False)


class _Handler(TrackedHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30

    def setup(self):
        super().setup()
        # one segment per answer: with Nagle, the body waits for the client's delayed ACK (40 ms)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, payload = self.server.owner.answer(self.command, self.path, raw)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


@contextmanager
def compute_fake(project: str = "test-project") -> Iterator[FakeCompute]:
    """A fake Compute Engine API on a free loopback port, stopped (connections too) at exit."""
    world = World(project)
    seed_default_network(world)
    server = LoopbackServer(_Handler, None, "compute-fake")
    server.owner = FakeCompute(world, server.server_port)
    server.start()
    try:
        yield server.owner
    finally:
        server.stop()


__all__ = ["FakeCompute", "compute_fake", "api_collection"]

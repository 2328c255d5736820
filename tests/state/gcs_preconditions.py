"""A loopback proxy that puts Cloud Storage's request preconditions in front of a GCS emulator.

**What the emulator lacks.** gcp-storage-emulator (2026.7.19, what ``.[test]`` installs) ignores
every request precondition: an upload with ``ifGenerationMatch=0`` over an existing object, an
upload, read or delete with an ``ifGenerationMatch`` of another generation, a read with
``ifGenerationNotMatch`` of the current one, all succeed (``test_gcs_preconditions.py`` probes
the bare emulator, so a release that starts enforcing them is noticed). It also sends no
``x-goog-generation`` header with an object's bytes, which Cloud Storage does.

**What this layer adds.** Requests pass through unchanged, except that the JSON API's generation
preconditions are enforced as Cloud Storage documents them
(https://cloud.google.com/storage/docs/request-preconditions): before a request that names an
object and carries ``ifGenerationMatch`` or ``ifGenerationNotMatch``, the layer asks the emulator
for the object's live generation and answers the request itself when a condition does not hold:
412 with Cloud Storage's JSON error (reason ``conditionNotMet``), or 304 for a read whose
``ifGenerationNotMatch`` fails. ``0`` means "no live object" for ``ifGenerationMatch`` and "a
live object" for ``ifGenerationNotMatch``; a read or delete of a missing object is left to the
emulator's 404, as Cloud Storage answers it. Every request that names an object is handled
under that object's lock, so check-then-write is atomic among the layer's clients (all of them
in the tests: they find the emulator through ``STORAGE_EMULATOR_HOST``, which names the layer).
What the layer cannot check is refused with 501, never passed on to be ignored: metageneration
preconditions, resumable uploads and other object calls (copy, rewrite, compose) that carry
preconditions, and chunked request bodies.

**Faults, for tests.** :meth:`PreconditionLayer.inject` answers the next matching requests with a
Google-shaped error (403, 429, 503...) instead of passing them on; :meth:`~PreconditionLayer.
lose_answer` passes the next matching request on and then drops the connection, so the call
happens and the client never learns it (the client then retries it). Every request is recorded
as a :class:`Call`.

Standard library only: a threaded ``http.server`` facing the clients, one ``http.client``
connection to the emulator per request; answers are read whole and sent with a Content-Length.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import defaultdict
from dataclasses import dataclass
from email.parser import BytesParser
from types import TracebackType
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.loopback import LoopbackServer, TrackedHandler

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect",
    "transfer-encoding", "content-length",
})
_GENERATION_CONDITIONS = ("ifGenerationMatch", "ifGenerationNotMatch")
_UNSUPPORTED_CONDITIONS = ("ifMetagenerationMatch", "ifMetagenerationNotMatch",
                           "ifSourceGenerationMatch", "ifSourceGenerationNotMatch",
                           "ifSourceMetagenerationMatch", "ifSourceMetagenerationNotMatch")
_REASONS = {400: "invalid", 401: "required", 403: "forbidden", 404: "notFound",
            412: "conditionNotMet", 429: "rateLimitExceeded", 500: "backendError",
            501: "notImplemented", 502: "backendError", 503: "backendError"}
_CONDITION_NOT_MET = "At least one of the pre-conditions you specified did not hold."
_UPSTREAM_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Call:
    """One request the layer received: ``object`` is None for calls on no object (listings,
    buckets). ``status`` is what the client was answered, or what the emulator answered when
    the answer was lost (``answered`` False)."""

    method: str
    bucket: str | None
    object: str | None
    query: dict[str, str]
    status: int
    answered: bool = True


@dataclass
class _Rule:
    method: str | None
    object: str | None
    status: int | None  # None: pass on, then lose the answer
    remaining: int

    def matches(self, method: str, name: str | None) -> bool:
        return ((self.method is None or self.method == method)
                and (self.object is None or self.object == name))


@dataclass(frozen=True)
class _Request:
    method: str
    path: str  # as sent, with the query
    query: dict[str, str]
    headers: list[tuple[str, str]]
    body: bytes
    bucket: str | None
    object: str | None
    kind: str  # "upload", "object" (read, delete, metadata), "object-call" (copy...), "other"


def google_error(status: int, message: str, reason: str | None = None) -> bytes:
    """The JSON error body Cloud Storage's JSON API answers with."""
    error: dict[str, object] = {"message": message, "domain": "global",
                                "reason": reason or _REASONS.get(status, "invalid")}
    if status == 412:
        error.update(locationType="header", location="If-Match")
    return json.dumps({"error": {"code": status, "message": message,
                                 "errors": [error]}}).encode()


def condition_holds(name: str, wanted: int, current: int | None) -> bool:
    """Whether precondition ``name=wanted`` holds for an object whose live generation is
    ``current`` (None: no live object)."""
    if name == "ifGenerationMatch":
        return current is None if wanted == 0 else current == wanted
    return current is not None if wanted == 0 else current != wanted


class PreconditionLayer:
    """Enforces generation preconditions in front of the emulator at ``upstream``
    (``"http://127.0.0.1:9023"``); see the module docstring. A context manager: entering starts
    it on a free loopback port (:attr:`url`), leaving stops it."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream = upstream
        self._upstream_address = (parts.hostname, parts.port or 80)
        self.url = ""
        self._mutex = threading.Lock()
        self._object_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(
            threading.Lock)
        self._rules: list[_Rule] = []
        self._calls: list[Call] = []
        self._injected = 0
        # The emulator answers one request at a time, with socketserver's backlog of 5 behind
        # it: more connections at once than that come back reset.
        self._upstream_slots = threading.BoundedSemaphore(4)
        self._server: LoopbackServer | None = None

    # -- faults and records ---------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._mutex:
            return list(self._calls)

    @property
    def injected(self) -> int:
        """How many requests were answered with an injected error."""
        with self._mutex:
            return self._injected

    def reset(self) -> None:
        """Forget the calls and the faults not yet used."""
        with self._mutex:
            self._calls.clear()
            self._rules.clear()
            self._injected = 0

    def inject(self, status: int, *, method: str | None = None, object: str | None = None,
               times: int = 1) -> None:
        """Answer the next ``times`` requests of ``method`` on ``object`` (None: any) with a
        Cloud Storage error of ``status`` instead of passing them on."""
        with self._mutex:
            self._rules.append(_Rule(method, object, status, times))

    def lose_answer(self, *, method: str, object: str, times: int = 1) -> None:
        """Pass the next ``times`` requests of ``method`` on ``object`` on, then drop the
        connection instead of answering: the call happened, the client does not know it."""
        with self._mutex:
            self._rules.append(_Rule(method, object, None, times))

    def _take_rule(self, method: str, name: str | None) -> _Rule | None:
        with self._mutex:
            for rule in self._rules:
                if rule.matches(method, name):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    self._injected += rule.status is not None
                    return rule
        return None

    def _record(self, request: _Request, status: int, answered: bool = True) -> None:
        with self._mutex:
            self._calls.append(Call(request.method, request.bucket, request.object,
                                    request.query, status, answered))

    def _object_lock(self, request: _Request) -> threading.Lock | None:
        if request.bucket is None or request.object is None:
            return None
        with self._mutex:
            return self._object_locks[(request.bucket, request.object)]

    # -- handling a request ---------------------------------------------------------------

    def handle(self, handler: "_Handler") -> None:
        request = _parse(handler)
        if isinstance(request, tuple):  # refused before it could be parsed
            status, message = request
            return self._answer(handler, None, status, [], google_error(status, message))
        rule = self._take_rule(request.method, request.object)
        if rule is not None and rule.status is not None:
            message = f"injected by the test layer: {_REASONS.get(rule.status, rule.status)}"
            return self._answer(handler, request, rule.status, [],
                                google_error(rule.status, message))
        lock = self._object_lock(request)
        if lock is None:
            return self._pass_on(handler, request, lose=rule is not None)
        with lock:
            try:
                refusal = self._check(request)
            except (OSError, RuntimeError) as exc:
                refusal = 502, google_error(502, f"the test layer could not check: {exc}")
            if refusal is not None:
                status, body = refusal
                return self._answer(handler, request, status, [], body)
            self._pass_on(handler, request, lose=rule is not None)

    def _check(self, request: _Request) -> tuple[int, bytes] | None:
        """The answer to a request whose preconditions do not hold (or cannot be checked)."""
        unsupported = [name for name in _UNSUPPORTED_CONDITIONS if name in request.query]
        conditions = {name: request.query[name] for name in _GENERATION_CONDITIONS
                      if name in request.query}
        if conditions and request.kind == "object-call":
            unsupported.extend(conditions)
        if unsupported:
            message = f"the test layer cannot enforce {', '.join(unsupported)} here"
            return 501, google_error(501, message)
        if not conditions:
            return None
        try:
            wanted = {name: int(value) for name, value in conditions.items()}
        except ValueError:
            return 400, google_error(400, f"Invalid argument: {conditions}")
        current = self._generation(request)
        if current is None and request.kind != "upload":
            return None  # a read or delete of a missing object: the emulator's 404
        for name, value in wanted.items():
            if not condition_holds(name, value, current):
                if name == "ifGenerationNotMatch" and request.method in ("GET", "HEAD"):
                    return 304, b""
                return 412, google_error(412, _CONDITION_NOT_MET)
        return None

    def _generation(self, request: _Request) -> int | None:
        """The live generation of the request's object, asked of the emulator."""
        assert request.bucket is not None and request.object is not None
        path = (f"/storage/v1/b/{quote(request.bucket, safe='')}/o/"
                f"{quote(request.object, safe='')}")
        status, _, body = self._exchange("GET", path, [], b"")
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"the emulator answered {status} to {path}: {body[:200]!r}")
        return int(json.loads(body)["generation"])

    def _pass_on(self, handler: "_Handler", request: _Request, *, lose: bool) -> None:
        try:
            status, headers, body = self._exchange(request.method, request.path,
                                                   request.headers, request.body)
        except OSError as exc:
            message = f"the test layer could not reach the emulator at {self.upstream}: {exc}"
            return self._answer(handler, request, 502, [], google_error(502, message))
        if lose:
            self._record(request, status, answered=False)
            handler.close_connection = True
            return
        self._answer(handler, request, status, headers, body)

    def _exchange(self, method: str, path: str, headers: list[tuple[str, str]],
                  body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        with self._upstream_slots:
            return self._exchange_once(method, path, headers, body)

    def _exchange_once(self, method: str, path: str, headers: list[tuple[str, str]],
                       body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._upstream_address,
                                                timeout=_UPSTREAM_TIMEOUT_S)
        try:
            connection.putrequest(method, path, skip_host=any(
                name.lower() == "host" for name, _ in headers), skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            answer = response.read()
            return response.status, [(name, value) for name, value in response.getheaders()
                                     if name.lower() not in _HOP_BY_HOP], answer
        finally:
            connection.close()

    def _answer(self, handler: "_Handler", request: _Request | None, status: int,
                headers: list[tuple[str, str]], body: bytes) -> None:
        if request is not None:
            self._record(request, status)
        handler.send_response_only(status)
        names = {name.lower() for name, _ in headers}
        for name, value in headers:
            handler.send_header(name, value)
        if body and "content-type" not in names:
            handler.send_header("Content-Type", "application/json; charset=UTF-8")
        if status != 304:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if body and handler.command != "HEAD" and status != 304:
            handler.wfile.write(body)
        handler.wfile.flush()

    # -- server ---------------------------------------------------------------------------

    def __enter__(self) -> "PreconditionLayer":
        self._server = LoopbackServer(_Handler, self, "gcs-preconditions").start()
        self.url = self._server.url
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()


class _Handler(TrackedHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as google-cloud-storage's session expects
    timeout = 120  # an idle kept-alive connection ends after this

    def do_GET(self) -> None:
        self.server.owner.handle(self)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


def _parse(handler: _Handler) -> _Request | tuple[int, str]:
    """The request, told apart the way the JSON API routes it; or a refusal."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        return 501, "the test layer does not take chunked request bodies"
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else b""
    parts = urlsplit(handler.path)
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    headers = [(name, value) for name, value in handler.headers.items()
               if name.lower() not in _HOP_BY_HOP]
    segments = parts.path.split("/")  # the object name stays quoted until it is cut out
    bucket = name = None
    kind = "other"
    if segments[1:5] == ["upload", "storage", "v1", "b"] and segments[6:] == ["o"]:
        bucket, kind = unquote(segments[5]), "upload"
        upload_type = query.get("uploadType", "")
        if upload_type == "multipart":
            name = _multipart_name(handler.headers.get("Content-Type", ""), body)
        elif upload_type == "media":
            name = query.get("name")
        elif any(c in query for c in _GENERATION_CONDITIONS + _UNSUPPORTED_CONDITIONS):
            return 501, f"the test layer cannot enforce preconditions of {upload_type} uploads"
    else:
        start = 5 if segments[1:3] == ["download", "storage"] else 4
        if segments[start - 3:start] == ["storage", "v1", "b"] and \
                segments[start + 1:start + 2] == ["o"] and len(segments) > start + 2:
            bucket = unquote(segments[start])
            name = unquote(segments[start + 2])
            kind = "object" if len(segments) == start + 3 else "object-call"
    return _Request(handler.command, handler.path, query, headers, body, bucket, name, kind)


def _multipart_name(content_type: str, body: bytes) -> str | None:
    """The object name in a multipart upload's first part (its JSON metadata)."""
    message = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        return None
    metadata = message.get_payload()[0].get_payload(decode=True)
    return json.loads(metadata).get("name")

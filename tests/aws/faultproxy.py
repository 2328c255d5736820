"""A fault-injecting, call-counting HTTP proxy to put in front of moto.

Point a boto3 client's ``endpoint_url`` at :attr:`FaultProxy.url` and every request goes through
the proxy, which records it as a :class:`Call` (service and operation, told from the request the
way AWS tells them) and forwards it unchanged to the upstream server (moto), streaming the answer
back. Rules change that on purpose:

- :meth:`FaultProxy.inject` answers the next matching requests with an AWS-shaped error instead
  of forwarding them, so botocore sees a real throttling or server error and its retry logic
  runs as it would against AWS;
- :meth:`FaultProxy.hold_answer` forwards the next matching request but keeps its answer back
  until released, then drops the connection: the call happened upstream and the client never
  learns it (a process killed while waiting is a create that got through unrecorded);
- :meth:`FaultProxy.strip_request_headers` forwards requests without some headers, which makes
  moto behave like a store that ignores them (``If-Match``/``If-None-Match``: a store without
  conditional writes).

Standard library only: a threaded ``http.server`` facing the client, one ``http.client``
connection upstream per request. The proxy speaks HTTP/1.1 with keep-alive to the client (what
botocore's connection pool expects); it answers ``Expect: 100-continue`` itself and does not pass
that header on (``http.client`` does not wait for a 100 before sending the body).

Error bodies follow each protocol's real errors, since botocore picks the error code out of them
(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html#api-error-response,
https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html#RESTErrorResponses):

- EC2: ``<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>``
- other query services: ``<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>``
- S3: ``<Error><Code/><Message/><RequestId/></Error>``
- JSON services: ``{"__type": code, "message": ...}``
"""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from tests.loopback import LoopbackServer, TrackedHandler

# Headers of one hop only (RFC 9110 section 7.6.1): the proxy decides them on each side itself.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect",
})
_QUERY_SERVICES = frozenset({
    "ec2", "autoscaling", "elasticloadbalancing", "iam", "sts", "sns", "rds", "cloudformation",
    "elasticache", "redshift", "sdb", "ses",
})
_UPSTREAM_TIMEOUT_S = 60.0
_COPY_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Call:
    """One request the proxy received. ``path`` is without the query string."""

    service: str
    operation: str
    method: str
    path: str
    status: int


@dataclass
class _Fault:
    service: str | None
    operation: str | None
    status: int
    code: str | None
    remaining: int

    def matches(self, service: str, operation: str) -> bool:
        return (self.service is None or self.service == service) and (
            self.operation is None or self.operation == operation
        )


@dataclass
class Hold:
    """A held answer (see :meth:`FaultProxy.hold_answer`)."""

    service: str
    operation: str
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class FaultProxy:
    """Records every request and forwards it to ``upstream`` (``"http://127.0.0.1:5000"``),
    except those a rule answers with an error. A context manager: entering starts the server on
    a free loopback port (:attr:`url`), leaving stops it and closes every client connection."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream = upstream
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self.url = ""
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._stripped: set[str] = set()
        self._holds: list[Hold] = []
        self._injected = 0
        self._server: LoopbackServer | None = None

    # -- rules and records ------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every request received so far, in the order they were answered (a copy). A call is
        recorded just before its answer is sent."""
        with self._lock:
            return list(self._calls)

    @property
    def injected(self) -> int:
        """How many requests were answered with an injected error."""
        with self._lock:
            return self._injected

    def count(self, service: str | None = None, operation: str | None = None) -> int:
        """How many calls match ``service`` and ``operation`` (``None``: any)."""
        with self._lock:
            return sum(
                1 for call in self._calls
                if (service is None or call.service == service)
                and (operation is None or call.operation == operation)
            )

    def reset(self) -> None:
        """Forget the calls and every rule (injected faults and stripped headers)."""
        with self._lock:
            self._calls.clear()
            self._faults.clear()
            self._stripped.clear()
            self._injected = 0

    def inject(self, *, service: str | None = None, operation: str | None = None,
               status: int = 503, code: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``service``/``operation`` (``None``: any)
        with an error of HTTP ``status`` and error ``code`` (default: the code the service
        uses for that status, see :func:`default_code`) instead of forwarding them."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(_Fault(service, operation, status, code, times))

    def hold_answer(self, *, service: str, operation: str) -> "Hold":
        """Forward the next request matching ``service``/``operation``, then hold its answer:
        ``hold.reached`` is set once upstream has answered; the client gets nothing (the
        connection is dropped) once ``hold.release`` is set or the proxy closes."""
        hold = Hold(service, operation)
        with self._lock:
            self._holds.append(hold)
        return hold

    def _take_hold(self, service: str, operation: str) -> "Hold | None":
        with self._lock:
            for hold in self._holds:
                if hold.service == service and hold.operation == operation:
                    self._holds.remove(hold)
                    return hold
        return None

    def strip_request_headers(self, *names: str) -> None:
        """Forward requests without these headers (case-insensitive), e.g. ``"If-Match",
        "If-None-Match"`` to simulate a store that ignores conditional writes."""
        with self._lock:
            self._stripped.update(name.lower() for name in names)

    def _take_fault(self, service: str, operation: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(service, operation):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    self._injected += 1
                    return fault
        return None

    def _stripped_headers(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._stripped)

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    # -- server -----------------------------------------------------------------------------

    def __enter__(self) -> "FaultProxy":
        self._server = LoopbackServer(_Handler, self, "faultproxy").start()
        self.url = self._server.url
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        with self._lock:
            for hold in self._holds:
                hold.release.set()
        server.stop()


# -- telling the service and operation ------------------------------------------------------


def service_of(headers: http.client.HTTPMessage, query: str) -> str:
    """The signing name from SigV4's credential scope (``<key>/<date>/<region>/<service>/
    aws4_request``), in the Authorization header or a presigned URL's ``X-Amz-Credential``."""
    credential = ""
    authorization = headers.get("Authorization", "")
    if "Credential=" in authorization:
        credential = authorization.split("Credential=", 1)[1].split(",", 1)[0].strip()
    else:
        credential = parse_qs(query).get("X-Amz-Credential", [""])[0]
    scope = credential.split("/")
    return scope[3] if len(scope) >= 5 else ""


def operation_of(service: str, method: str, path: str, query: str,
                 headers: http.client.HTTPMessage, body: bytes) -> str:
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    if service != "s3":
        action = parse_qs(query).get("Action")
        content_type = headers.get("Content-Type", "")
        if not action and content_type.startswith("application/x-www-form-urlencoded"):
            action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return action[0]
    return f"{method} {path}"


def default_code(service: str, status: int) -> str:
    """The error code a service answers ``status`` with."""
    if status == 503:
        return "Unavailable" if service == "ec2" else "ServiceUnavailable"
    if status in (429, 400):
        return {"ec2": "RequestLimitExceeded", "s3": "SlowDown"}.get(service, "Throttling")
    if status >= 500:
        return "InternalError"
    return {403: "AccessDenied", 404: "NotFound", 409: "Conflict",
            412: "PreconditionFailed"}.get(status, "BadRequest")


def error_response(service: str, json_protocol: bool, status: int, code: str
                   ) -> tuple[bytes, list[tuple[str, str]]]:
    """Body and headers of an AWS error of ``code`` as ``service``'s protocol shapes it."""
    request_id = str(uuid.uuid4())
    message = f"injected by FaultProxy: {code}"
    if json_protocol:
        body = json.dumps({"__type": code, "message": message}).encode()
        return body, [("Content-Type", "application/x-amz-json-1.1"),
                      ("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", code)]
    code_x, message_x, id_x = escape(code), escape(message), escape(request_id)
    if service == "s3":
        text = (f"<Error><Code>{code_x}</Code><Message>{message_x}</Message>"
                f"<RequestId>{id_x}</RequestId></Error>")
        headers = [("x-amz-request-id", request_id)]
    elif service == "ec2":
        text = (f"<Response><Errors><Error><Code>{code_x}</Code><Message>{message_x}</Message>"
                f"</Error></Errors><RequestID>{id_x}</RequestID></Response>")
        headers = [("x-amzn-RequestId", request_id)]
    else:
        kind = "Receiver" if status >= 500 else "Sender"
        text = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code_x}</Code>"
                f"<Message>{message_x}</Message></Error><RequestId>{id_x}</RequestId>"
                "</ErrorResponse>")
        headers = [("x-amzn-RequestId", request_id)]
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n' + text).encode()
    return body, [("Content-Type", "text/xml"), *headers]


# -- the handler ----------------------------------------------------------------------------


class _Handler(TrackedHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle kept-alive client connection ends after this

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _proxy(self) -> None:
        proxy = self.server.owner
        body, chunked = self._read_body()
        parts = urlsplit(self.path)
        service = service_of(self.headers, parts.query)
        operation = operation_of(service, self.command, parts.path, parts.query, self.headers,
                                 body)
        # Each call is recorded before its answer is sent: a client that got its answer finds
        # its call in ``calls``.
        def record(status: int) -> None:
            proxy._record(Call(service, operation, self.command, parts.path, status))

        fault = proxy._take_fault(service, operation)
        if fault is not None:
            record(fault.status)
            self._send_error(service, fault.status,
                             fault.code or default_code(service, fault.status))
        else:
            self._forward(body, chunked, proxy._stripped_headers(), record,
                          proxy._take_hold(service, operation))

    def _read_body(self) -> tuple[bytes, bool]:
        """The request body, and whether it came chunked (it is then forwarded chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(pieces), True
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(length) if length else b""), False

    def _send_error(self, service: str, status: int, code: str) -> None:
        json_protocol = bool(self.headers.get("X-Amz-Target")) or (
            service not in _QUERY_SERVICES and service != "s3"
            and "json" in self.headers.get("Content-Type", "")
        )
        body, headers = error_response(service, json_protocol, status, code)
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _forward(self, body: bytes, chunked: bool, stripped: frozenset[str],
                 record: Callable[[int], None], hold: Hold | None = None) -> None:
        proxy = self.server.owner
        upstream = http.client.HTTPConnection(
            proxy._upstream_host, proxy._upstream_port, timeout=_UPSTREAM_TIMEOUT_S
        )
        try:
            try:
                upstream.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() not in stripped:
                        upstream.putheader(name, value)
                upstream.endheaders(body if body or chunked else None, encode_chunked=chunked)
                response = upstream.getresponse()
            except OSError as exc:
                message = f"FaultProxy: upstream {proxy.upstream} failed: {exc}".encode()
                record(502)
                self.send_response_only(502)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)
                return
            record(response.status)
            if hold is not None:
                hold.reached.set()
                hold.release.wait(_UPSTREAM_TIMEOUT_S)
                self.close_connection = True
                return
            self._relay(response)
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse) -> None:
        """Stream ``response`` back: its status and headers as they came, the body with the
        same framing (Content-Length copied as is; chunked re-chunked, since http.client
        decodes it; neither: read to the end and close the connection after it)."""
        headers = [(name, value) for name, value in response.getheaders()
                   if name.lower() not in _HOP_BY_HOP]
        names = {name.lower() for name, _ in headers}
        no_body = (self.command == "HEAD" or response.status in (204, 304)
                   or 100 <= response.status < 200)
        rechunk = response.chunked and not no_body
        close_delimited = not no_body and not rechunk and "content-length" not in names
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            self.send_header(name, value)
        if close_delimited:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        if no_body:
            self.wfile.flush()
            return
        while True:
            chunk = response.read1(_COPY_CHUNK) if rechunk else response.read(_COPY_CHUNK)
            if not chunk:
                break
            if rechunk:
                self.wfile.write(b"%X\r\n%s\r\n" % (len(chunk), chunk))
            else:
                self.wfile.write(chunk)
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

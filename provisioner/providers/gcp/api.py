"""Calls to Compute Engine: one place for clients, operations, retries and error translation.

- Clients are google-cloud-compute's REST clients with Application Default Credentials. The
  endpoint is Google's unless ``CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`` (gcloud's own
  override, e.g. ``http://127.0.0.1:8080/compute/v1/``) names another;
  ``PROVISIONER_GCP_CREDENTIALS=anonymous`` sends no credentials (for a local fake only).
- Mutating calls use the ``*_unary`` methods, which return the Operation, and this module waits
  on it with operations clients built with the same endpoint: the library's own
  ``ExtendedOperation.result()`` polls through clients that ignore a custom endpoint
  (google-cloud-compute 1.x), so against anything but Google it would leave the endpoint.
- Every insert carries a ``requestId`` (the journal's token as a UUID), so a retried insert is
  one insert; other mutations get a fresh UUID per call, reused across its retries.
- The library's retries are off (``retry=None``); ours retry 429 and 5xx answers and connection
  failures with backoff and jitter, each retry an event
  (:func:`provisioner.providers.cloud.with_retries`), under a per-run rate limit.
- A refused call, or an operation that ends with an error, becomes
  :class:`~provisioner.providers.cloud.ApiError` whose ``code`` is Google's reason
  (``notFound``, ``alreadyExists``, ``resourceInUseByAnotherResource``) or the operation's error
  code (``QUOTA_EXCEEDED``, ``ZONE_RESOURCE_POOL_EXHAUSTED``).

google-cloud-compute is imported on first use only (the CLI must start fast).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import urlsplit

from provisioner.errors import ProviderError
from provisioner.providers.cloud import ApiError, OnRetry, RateLimit, Retryable, with_retries

RATE = (10.0, 20)  # requests per second and burst; Compute's default quotas are far above
OPERATION_TIMEOUT_S = 900.0
HINTS = {
    "QUOTA_EXCEEDED": "raise the quota in the project (IAM & Admin > Quotas) or ask for less",
    "ZONE_RESOURCE_POOL_EXHAUSTED": "the zone is out of this machine type: try another zone "
                                    "or machine type, or try again later",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": "the zone is out of this machine type: try "
                                                 "another zone or machine type",
    "alreadyExists": "a resource of that name exists and is not this state's: remove or "
                     "rename it",
    "resourceInUseByAnotherResource": "something else still uses it",
}


def request_id(token: str | None = None) -> str:
    """A requestId: the token (a uuid4's hex) as a UUID, or a new one."""
    return str(uuid.UUID(token)) if token else str(uuid.uuid4())


def to_dict(message: Any) -> dict[str, Any]:
    """A compute_v1 message as the REST API's JSON (camelCase field names)."""
    return json.loads(type(message).to_json(message, use_integers_for_enums=False))


class GceApi:
    """Clients of one run. ``on_retry(address, message, data)`` is told of every retry."""

    def __init__(self, on_retry: OnRetry | None = None, *, endpoint: str | None = None,
                 backoff_s: float = 0.5) -> None:
        self.on_retry = on_retry or (lambda address, message, data: None)
        self.backoff_s = backoff_s
        self.endpoint = _endpoint(endpoint)
        self._clients: dict[str, Any] = {}
        self._credentials = None
        self._limit = RateLimit(*RATE)
        self._lock = threading.Lock()

    def client(self, kind: str):
        """The ``compute_v1.<kind>Client`` (``Firewalls``, ``ZoneOperations``)."""
        with self._lock:
            if kind not in self._clients:
                from google.cloud import compute_v1

                options = {"api_endpoint": self.endpoint} if self.endpoint else None
                self._clients[kind] = getattr(compute_v1, f"{kind}Client")(
                    credentials=self._credentials_locked(), client_options=options)
            return self._clients[kind]

    def message(self, type_name: str, body: dict[str, Any]):
        """``compute_v1.<type_name>`` from REST JSON; an unknown field is a bug here, so it
        fails."""
        from google.cloud import compute_v1

        return getattr(compute_v1, type_name).from_json(json.dumps(body))

    def call(self, kind: str, method: str, *, for_address: str | None = None,
             **request: Any) -> Any:
        """``<kind>Client.<method>(request=...)`` with rate limit, retries and translation.
        ``for_address``: the resource the call is for, named in events and errors (the request
        itself may have a field called ``address``)."""
        address = for_address
        bound = getattr(self.client(kind), method)

        def once() -> Any:
            self._limit.take()
            return _translate(f"{kind}.{method}", address,
                              lambda: bound(request=request, retry=None, timeout=60))

        return with_retries(once, what=f"compute {kind}.{method}", address=address,
                            on_retry=self.on_retry, data={"service": "compute", "operation":
                                                          f"{kind}.{method}"},
                            backoff_s=self.backoff_s)

    def items(self, kind: str, *, for_address: str | None = None, **request: Any) -> list[dict]:
        """Every item of a list call (all pages), as REST JSON."""
        found: list[dict] = []
        token = ""
        while True:
            page = self.call(kind, "list", for_address=for_address, **request, page_token=token,
                             max_results=500)
            # One page per call: the pager's own next-page fetch would go around our retries.
            response = page._response
            found.extend(to_dict(item) for item in response.items)
            token = response.next_page_token
            if not token:
                return found

    def mutate(self, kind: str, method: str, *, for_address: str | None,
               token: str | None = None, **request: Any) -> dict[str, Any]:
        """A mutating call (``*_unary``) and its operation, waited on until DONE."""
        request.setdefault("request_id", request_id(token))
        operation = self.call(kind, f"{method}_unary", for_address=for_address, **request)
        return self.wait(to_dict(operation), for_address)

    def wait(self, operation: dict[str, Any], address: str | None) -> dict[str, Any]:
        """Wait for ``operation`` (REST JSON) to be DONE; raise ApiError if it failed."""
        deadline = time.monotonic() + OPERATION_TIMEOUT_S
        project = _last(operation.get("selfLink"), "projects")
        while operation.get("status") != "DONE":
            if time.monotonic() > deadline:
                raise ProviderError(f"operation {operation.get('name')} did not finish in "
                                    f"{OPERATION_TIMEOUT_S:.0f}s", address=address)
            if operation.get("zone"):
                kind, where = "ZoneOperations", {"zone": _base(operation["zone"])}
            elif operation.get("region"):
                kind, where = "RegionOperations", {"region": _base(operation["region"])}
            else:
                kind, where = "GlobalOperations", {}
            # wait() returns when the operation is DONE or after about two minutes.
            operation = to_dict(self.call(kind, "wait", for_address=address, project=project,
                                          operation=operation["name"], **where))
        errors = (operation.get("error") or {}).get("errors") or []
        if errors:
            code = str(errors[0].get("code") or "OPERATION_FAILED")
            message = "; ".join(str(e.get("message") or e.get("code")) for e in errors)
            raise ApiError(f"{operation.get('operationType')} {operation.get('targetLink', '')}"
                           f" failed: {code}: {message}", code=code,
                           status=operation.get("httpErrorStatusCode"), address=address,
                           hint=HINTS.get(code))
        return operation

    def _credentials_locked(self):
        if self._credentials is None:
            if os.environ.get("PROVISIONER_GCP_CREDENTIALS") == "anonymous":
                from google.auth.credentials import AnonymousCredentials

                self._credentials = AnonymousCredentials()
            else:
                import google.auth
                from google.auth.exceptions import DefaultCredentialsError

                try:
                    self._credentials, _ = google.auth.default(
                        scopes=["https://www.googleapis.com/auth/cloud-platform"])
                except DefaultCredentialsError as error:
                    raise ProviderError(f"no Google Cloud credentials: {error}",
                                        hint="run `gcloud auth application-default login` or "
                                        "set GOOGLE_APPLICATION_CREDENTIALS") from None
        return self._credentials


def _endpoint(configured: str | None) -> str | None:
    value = configured or os.environ.get("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE")
    if not value:
        return None
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme else value


def _translate(what: str, address: str | None, action: Callable[[], Any]) -> Any:
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    try:
        return action()
    except (gexc.TooManyRequests, gexc.ServerError) as error:
        raise Retryable(f"HTTP {error.code}: {error.message}") from None
    except gexc.GoogleAPICallError as error:
        reasons = [e.get("reason") for e in (error.errors or []) if isinstance(e, dict)]
        code = next((r for r in reasons if r), None) or type(error).__name__
        raise ApiError(f"compute {what}: {code}: {error.message}", code=code,
                       status=error.code, address=address, hint=HINTS.get(code)) from None
    except GoogleAuthError as error:
        raise ProviderError(f"Google Cloud credentials failed: {error}", address=address) from None
    except OSError as error:  # a reset or refused connection (requests wraps some of these)
        raise Retryable(f"connection failed: {error}") from None
    except Exception as error:  # requests' ConnectionError is not an OSError
        if type(error).__module__.startswith(("requests", "urllib3")):
            raise Retryable(f"connection failed: {error}") from None
        raise


def _base(link: str) -> str:
    return str(link).rstrip("/").rsplit("/", 1)[-1]


def _last(link: str | None, key: str) -> str:
    parts = str(link or "").split("/")
    return parts[parts.index(key) + 1] if key in parts else ""

"""Google's JSON error bodies, and the errors the fake raises while handling a request.

Every error body has the shape the Compute API writes (``error.code``, ``error.message``,
``error.errors[].{message, domain, reason}``), which ``google.api_core.exceptions
.from_http_response`` turns into the typed exceptions (NotFound, Conflict, BadRequest, ...).
The messages follow what Compute Engine returns, e.g. "The resource 'projects/p/zones/z/
instances/x' was not found" and "The health_check resource '...' is already being used by
'...'" (quoted in public issue threads of kubernetes/test-infra and terraform modules).
"""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error answered with Google's JSON error body."""

    def __init__(self, code: int, reason: str, message: str, *, domain: str = "global",
                 status: str | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.status = status

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message,
                 "errors": [{"message": self.message, "domain": self.domain,
                             "reason": self.reason}]}
        if self.status:
            error["status"] = self.status
        return {"error": error}


def not_found(path: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{path}' was not found")


def already_exists(path: str) -> ApiError:
    return ApiError(409, "alreadyExists", f"The resource '{path}' already exists")


def bad_fingerprint() -> ApiError:
    return ApiError(412, "conditionNotMet", "Invalid fingerprint.")


def bad_label_fingerprint() -> ApiError:
    return ApiError(412, "conditionNotMet",
                    "Labels fingerprint either invalid or resource labels have changed")


def in_use(noun: str, path: str, user_path: str) -> ApiError:
    return ApiError(400, "resourceInUseByAnotherResource",
                    f"The {noun} resource '{path}' is already being used by '{user_path}'")


def invalid(field: str, value: object, why: str) -> ApiError:
    return ApiError(400, "invalid", f"Invalid value for field '{field}': '{value}'. {why}")


def required(field: str) -> ApiError:
    return ApiError(400, "required", f"Required field '{field}' not specified")


def not_ready(path: str) -> ApiError:
    return ApiError(400, "resourceNotReady", f"The resource '{path}' is not ready")


def unsupported(method: str, path: str) -> ApiError:
    """A call the real API has but the fake does not: loud, so a test never passes by accident."""
    return ApiError(501, "notImplemented",
                    f"compute_fake does not implement {method} {path}", status="UNIMPLEMENTED")


def injected(status: int, http_method: str) -> ApiError:
    """The errors of :meth:`FakeCompute.inject`: throttling and transient server errors."""
    if status == 429:
        kind = "Read requests" if http_method == "GET" else "Queries"
        message = (f"Quota exceeded for quota metric '{kind}' and limit '{kind} per minute' of "
                   "service 'compute.googleapis.com' for consumer 'project_number:000000000000'.")
        return ApiError(429, "rateLimitExceeded", message, domain="usageLimits",
                        status="RESOURCE_EXHAUSTED")
    if status == 503:
        return ApiError(503, "backendError", "Internal error. Please try again or contact "
                        "Google Support. (Code: 'fake-503')", status="UNAVAILABLE")
    if status == 500:
        return ApiError(500, "backendError", "Internal error. Please try again or contact "
                        "Google Support. (Code: 'fake-500')", status="INTERNAL")
    if status == 403:
        return ApiError(403, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits",
                        status="PERMISSION_DENIED")
    raise ValueError(f"inject() supports 403, 429, 500 and 503, not {status}")


# What an asynchronous failure writes into the operation: httpErrorStatusCode and
# httpErrorMessage as GCE sets them (403 FORBIDDEN for QUOTA_EXCEEDED, 503 SERVICE UNAVAILABLE
# for ZONE_RESOURCE_POOL_EXHAUSTED[_WITH_DETAILS], seen in operations quoted in public issues).
OPERATION_HTTP_ERRORS = {
    "QUOTA_EXCEEDED": (403, "FORBIDDEN"),
    "ZONE_RESOURCE_POOL_EXHAUSTED": (503, "SERVICE UNAVAILABLE"),
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": (503, "SERVICE UNAVAILABLE"),
    "RESOURCE_NOT_FOUND": (404, "NOT FOUND"),
    "RESOURCE_ALREADY_EXISTS": (409, "CONFLICT"),
    "CONDITION_NOT_MET": (412, "PRECONDITION FAILED"),
    "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE": (400, "BAD REQUEST"),
}

HTTP_MESSAGES = {400: "BAD REQUEST", 403: "FORBIDDEN", 404: "NOT FOUND", 409: "CONFLICT",
                 412: "PRECONDITION FAILED", 500: "INTERNAL SERVER ERROR",
                 503: "SERVICE UNAVAILABLE"}

# reason of an ApiError -> code of an operation error, for effects that fail when they run
OPERATION_CODES = {"notFound": "RESOURCE_NOT_FOUND", "alreadyExists": "RESOURCE_ALREADY_EXISTS",
                   "conditionNotMet": "CONDITION_NOT_MET",
                   "resourceInUseByAnotherResource": "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE"}

"""Calls to AWS: one place for clients, retries, rate limits and error translation.

Every AWS call of the provider goes through :meth:`AwsApi.call`:

- clients come from boto3's standard credential chain and region settings; ``AWS_ENDPOINT_URL``
  (or ``AWS_ENDPOINT_URL_<SERVICE>``) is honoured by botocore itself, which is how the tests
  point every call at moto;
- botocore's own retries are off, so that each retry is ours and becomes an event: throttling
  codes, 5xx answers and connection failures are retried with exponential backoff and full
  jitter (:func:`provisioner.providers.cloud.with_retries`);
- each service has a token-bucket rate limit shared by every thread of the run, so a plan of many
  resources does not throttle itself;
- a refused call becomes :class:`~provisioner.providers.cloud.ApiError` carrying the AWS error
  code, so resource types test codes, never botocore exceptions.

boto3 is imported on first use only (the CLI must start fast).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from provisioner.errors import ProviderError
from provisioner.providers.cloud import ApiError, OnRetry, RateLimit, Retryable, with_retries
# Requests per second and burst, per service. EC2's documented non-mutating bucket refills at
# 20/s per account and its mutating one far lower; staying under them leaves room for others.
RATES: dict[str, tuple[float, int]] = {
    "ec2": (10.0, 20),
    "autoscaling": (5.0, 10),
    "elbv2": (5.0, 10),
}
DEFAULT_RATE = (5.0, 10)

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "SlowDown", "ProvisionedThroughputExceededException", "EC2ThrottledException",
    "PriorRequestNotComplete", "BandwidthLimitExceeded", "RequestTimeout",
    "RequestTimeoutException", "InternalError", "InternalFailure", "ServiceUnavailable",
    "Unavailable",
})


class AwsApi:
    """Clients of one run, by (service, region). ``on_retry(address, message, data)`` is told
    of every retry; ``wait`` scales the backoff (tests make it short)."""

    def __init__(self, on_retry: OnRetry | None = None, *, backoff_s: float = 0.5,
                 max_backoff_s: float = 20.0) -> None:
        self.on_retry = on_retry or (lambda address, message, data: None)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._clients: dict[tuple[str, str], Any] = {}
        self._limits: dict[str, RateLimit] = {}
        self._lock = threading.Lock()

    def client(self, service: str, region: str):
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                import boto3
                from botocore.config import Config

                # boto3.client() shares a session that is not thread-safe to create clients on;
                # we hold our lock, and the clients themselves are thread-safe.
                self._clients[key] = boto3.session.Session().client(
                    service, region_name=region,
                    config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                  connect_timeout=10, read_timeout=60,
                                  user_agent_extra="provisioner"))
                self._limits.setdefault(service, RateLimit(*RATES.get(service, DEFAULT_RATE)))
            return self._clients[key]

    def call(self, service: str, region: str, operation: str, *, address: str | None = None,
             eventual: frozenset[str] = frozenset(), **params: Any) -> dict[str, Any]:
        """``client.<operation>(**params)`` with rate limit, retries and error translation.
        ``eventual``: error codes that mean "not visible yet" right after a create (EC2 is
        eventually consistent), retried like throttling."""
        client = self.client(service, region)
        limit = self._limits[service]
        method = getattr(client, operation)

        def once() -> dict[str, Any]:
            limit.take()
            try:
                return self._translate(service, operation, address, method, params)
            except ApiError as error:
                if error.code in eventual:
                    raise Retryable(f"{error.code} (not visible yet): {error}") from None
                raise

        return with_retries(once, what=f"{service} {operation}", address=address,
                            on_retry=self.on_retry,
                            data={"service": service, "operation": operation},
                            backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s)

    def pages(self, service: str, region: str, operation: str, key: str, *,
              address: str | None = None, **params: Any) -> list[Any]:
        """Every item under ``key`` of a paginated operation (``NextToken``/``Marker``)."""
        items: list[Any] = []
        while True:
            answer = self.call(service, region, operation, address=address, **params)
            items.extend(answer.get(key) or [])
            token = answer.get("NextToken") or answer.get("NextMarker")
            if not token:
                return items
            params["NextToken" if "NextToken" in answer else "Marker"] = token

    @staticmethod
    def _translate(service: str, operation: str, address: str | None,
                   method: Callable[..., dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError,
                                         NoCredentialsError, NoRegionError,
                                         PartialCredentialsError)

        try:
            return method(**params)
        except ClientError as error:
            info = error.response.get("Error", {})
            code = str(info.get("Code") or "Unknown")
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = str(info.get("Message") or code)
            if code in THROTTLING_CODES or status >= 500 or status == 429:
                raise Retryable(f"{code} (HTTP {status}): {message}") from None
            raise ApiError(f"{service} {operation}: {code}: {message}", code=code,
                           status=status, address=address) from None
        except (NoCredentialsError, PartialCredentialsError) as error:
            raise ProviderError(f"no AWS credentials: {error}", address=address,
                                hint="configure credentials (AWS_PROFILE, environment "
                                "variables or an instance role)") from None
        except NoRegionError:
            raise ProviderError("no AWS region", address=address,
                                hint="set cluster.region in the spec") from None
        except ConnectionError as error:
            raise Retryable(f"connection failed: {error}") from None
        except BotoCoreError as error:
            raise ProviderError(f"{service} {operation}: {error}", address=address) from None

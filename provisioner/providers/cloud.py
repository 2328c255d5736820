"""What the cloud providers (aws, gcp) share: API errors with codes, rate limits, retries that
are events, lineage-suffixed names, finding an interrupted create by its token, and waiting.

Each provider's ``api`` module turns its SDK's errors into :class:`ApiError` (refused) or
:class:`Retryable` (throttling, 5xx, a reset connection) and calls :func:`with_retries`.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from provisioner.errors import ProviderError
from provisioner.providers.base import KnownResource, ListScope, LiveResource, Owner, ResourceType

T = TypeVar("T")
ATTEMPTS = 8

OnRetry = Callable[[str | None, str, dict[str, Any]], None]


class ApiError(ProviderError):
    """The cloud refused a call. ``code`` is its error code (``InvalidGroup.NotFound``,
    ``notFound``)."""

    def __init__(self, message: str, *, code: str, status: int | None = None,
                 address: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, address=address, hint=hint)
        self.code = code
        self.status = status


class Retryable(Exception):
    """A failure worth another attempt; ``description`` says what it was."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class RateLimit:
    """A token bucket shared by the threads of a run: ``take()`` blocks until a request may go."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.per_second)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.per_second
            time.sleep(wait)


def with_retries(once: Callable[[], T], *, what: str, address: str | None, on_retry: OnRetry,
                 data: dict[str, Any], backoff_s: float = 0.5, max_backoff_s: float = 20.0,
                 attempts: int = ATTEMPTS) -> T:
    """``once()`` until it does not raise :class:`Retryable`, with exponential backoff and full
    jitter; every retry is told to ``on_retry`` (an event). ``what`` names the call."""

    def report(state) -> None:
        error = state.outcome.exception()
        delay = state.next_action.sleep if state.next_action else 0.0
        on_retry(address, f"{what}: {error.description}; retry {state.attempt_number} in "
                 f"{delay:.1f}s", {**data, "attempt": state.attempt_number,
                                   "error": error.description})

    retrying = Retrying(retry=retry_if_exception_type(Retryable),
                        stop=stop_after_attempt(attempts),
                        wait=wait_random_exponential(multiplier=backoff_s, max=max_backoff_s),
                        before_sleep=report, reraise=True)
    try:
        return retrying(once)
    except Retryable as error:
        raise ProviderError(f"{what} kept failing after {attempts} attempts: "
                            f"{error.description}", address=address,
                            hint="the cloud is throttling or failing; try again later") from None


def ignore_codes(codes: frozenset[str] | set[str], action: Callable[[], T]) -> T | None:
    """Run ``action``; None when the cloud answers with one of ``codes`` (already gone,
    already there)."""
    try:
        return action()
    except ApiError as error:
        if error.code in codes:
            return None
        raise


def dashboard_gcs_health(dashboard_url: str) -> str | None:
    """None when the head's dashboard says its GCS is healthy, else why not. The operator
    reaches a cloud head's dashboard only (firewalls keep the GCS port to the nodes), and the
    dashboard's GCS health endpoint answers for both."""
    import urllib.request

    url = f"{dashboard_url.rstrip('/')}/api/gcs_healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return None if response.status == 200 else f"{url} answered {response.status}"
    except OSError as error:
        return f"the head's dashboard does not answer ({url}: {error})"


def in_known_order(live: list[T], known: list[T] | None, key: Callable[[T], Any]) -> list[T]:
    """``live`` in the order the state or the spec wrote it, when it is the same set: clouds
    answer sets (rules, backends) in their own order, which is no change."""
    if known is not None and sorted(map(key, live)) == sorted(map(key, known)):
        return list(known)
    return live


def lineage_name(owner: Owner, name: str, limit: int) -> str:
    """``name`` with the lineage's first 8 hex digits appended, within ``limit`` characters: two
    states of the same cluster name never collide, and the name still says whose it is."""
    suffix = "-" + owner.short
    return name[: limit - len(suffix)].rstrip("-") + suffix


def regions(scope: ListScope, key: str = "region") -> list[str]:
    """The regions (or projects, zones: ``key``) the known resources are in: where ``list``
    looks."""
    return sorted({str(k.attributes[key]) for k in scope.known if k.attributes.get(key)})


def known_by_address(scope: ListScope) -> dict[str, KnownResource]:
    return {k.address: k for k in scope.known}


class CloudType(ResourceType):
    """Base of the cloud resource types (see provisioner.providers.base for the contract)."""

    name_limit: ClassVar[int] = 63

    def shared(self, key: str, make: Callable[[], T]) -> T:
        """One ``make()`` per run (API clients and their rate limits), shared by every type."""
        shared = self.ctx.shared
        if key not in shared:
            shared.setdefault(key, make())
        return shared[key]

    def name_of(self, desired: Mapping[str, Any], limit: int | None = None) -> str:
        return lineage_name(self.ctx.owner, str(desired["name"]), limit or self.name_limit)

    def _by_token(self, address: str, token: str, desired: dict[str, Any]) -> LiveResource | None:
        """What an earlier attempt of this create made, if it got through (found by the token
        it carries, so also where the API takes no client token or ignores it)."""
        scope = ListScope(self.ctx.owner, [KnownResource(address, desired)])
        return next((live for live in self.list(scope) if live.token == token), None)

    def delete_when_free(self, address: str, what: str, delete: Callable[[], Any], *,
                         gone: frozenset[str], busy: frozenset[str],
                         interval_s: float = 3.0) -> None:
        """Call ``delete`` until the cloud stops refusing it with a ``busy`` code: what used
        the resource (an instance, a load balancer, a listener) lets go some time after it is
        deleted itself. A ``gone`` code is success. ``what`` names the wait in progress."""

        def attempt() -> bool | None:
            try:
                ignore_codes(gone, delete)
                return True
            except ApiError as error:
                if error.code in busy:
                    return None
                raise

        self.wait_for(address, what, attempt, interval_s=interval_s)

    def wait_for(self, address: str, what: str, check: Callable[[], T | None], *,
                 timeout_s: float = 600.0, interval_s: float = 2.0) -> T:
        """Poll ``check`` until it returns something other than None."""
        deadline = time.monotonic() + timeout_s
        reported = time.monotonic()
        while True:
            result = check()
            if result is not None:
                return result
            now = time.monotonic()
            if now > deadline:
                raise ProviderError(f"timed out after {timeout_s:.0f}s waiting for {what}",
                                    address=address)
            if now - reported > 10:
                self.ctx.progress(address, f"waiting for {what}")
                reported = now
            time.sleep(interval_s)

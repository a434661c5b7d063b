"""Every error the provider client raises, split by what the caller should do next.

    SeedqError
    └── ProviderError                 status_code, error_type, message
        ├── TransientProviderError    (TransientError) retry later, retry_after_s when said
        │   ├── ServerError           5xx, or a 2xx body that says "error"
        │   ├── RateLimited           429
        │   ├── ProviderTimeout       connect/read/write/pool timeout
        │   ├── ProviderConnectionError  refused, reset, dropped mid-body
        │   ├── MalformedResponse     not the JSON (or file) the contract promises
        │   ├── EnqueueOutcomeUnknown  an enqueue was sent but its answer was lost
        │   └── ResultWriteError      the local file could not be written
        ├── PermanentJobError         (JobFailed) fail this job, do not retry it
        │   ├── InvalidRequest        400/409/413/422/..., invalid_params
        │   ├── Forbidden             403 on an API call
        │   ├── NotFound              404, resource_not_found
        │   ├── GenerationFailed      the generation ended `failed` for a job reason
        │   ├── ResultUrlExpired      401/403/404/410 on a presigned result URL
        │   ├── ResultTooLarge        the result file is above the byte cap
        │   └── RefusedUrl            a URL (or a redirect) the worker must not fetch
        └── RunFatalError             (RunFatal) stop submitting: nothing else will succeed
            ├── Unauthenticated       401, unauthenticated
            └── InsufficientCredits   "Insufficient credits", 402

The three branches are the outcomes of ``seedq.errors``, so the pipeline handles a
provider error exactly as it handles its own. Transient errors are raised once; the
pipeline owns retries and backoff.

Whether a failed enqueue (or retry) may have created a paid generation is decided in one
place, :func:`creation`: the client marks an answer lost after the request may have
arrived as ``EnqueueOutcomeUnknown``, and :func:`creation` reads that and the status.

Messages come from the response body, trimmed and with any bearer token scrubbed; the
API key, request headers and the Authorization value never appear in an exception.
"""

from __future__ import annotations

from enum import Enum

from seedq.errors import JobFailed, RunFatal, SeedqError, TransientError

# 5xx answered by the origin itself: whatever it created is listed by now. A gateway's
# 502 or 504 answers for an origin that may still be working, so it proves nothing.
ORIGIN_STATUSES = frozenset({500, 501, 503, 505})


class ProviderError(SeedqError):
    """Base of every provider failure; the human message is ``exc.message``."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_type = error_type

    def __str__(self) -> str:
        extras = [f"HTTP {self.status_code}"] if self.status_code is not None else []
        if self.error_type:
            extras.append(self.error_type)
        return f"{self.message} ({', '.join(extras)})" if extras else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r}, "
            f"error_type={self.error_type!r})"
        )


class TransientProviderError(ProviderError, TransientError):
    """Retry later: the provider or the network failed, not the job."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, error_type=error_type)
        self.retry_after_s = retry_after_s


class ServerError(TransientProviderError):
    """A 5xx, or a success status whose body reports an error."""


class RateLimited(TransientProviderError):
    """429 Too Many Requests; ``retry_after_s`` holds the server's wish, if it said one."""


class ProviderTimeout(TransientProviderError):
    """The provider did not answer in time."""


class ProviderConnectionError(TransientProviderError):
    """Connection refused, reset, or dropped before a full response."""


class MalformedResponse(TransientProviderError):
    """The body is not what the contract promises (an HTML proxy page, truncated JSON)."""


class EnqueueOutcomeUnknown(TransientProviderError):
    """An enqueue reached the server but its answer was lost: list before re-enqueueing."""


class ResultWriteError(TransientProviderError):
    """A result file could not be written locally (disk full, permissions)."""


class PermanentJobError(ProviderError, JobFailed):
    """Fail this job and do not retry it; other jobs may still succeed."""


class InvalidRequest(PermanentJobError):
    """The provider refused the request as invalid (400, 422, invalid_params, ...)."""


class Forbidden(PermanentJobError):
    """403 on an API call."""


class NotFound(PermanentJobError):
    """404 / resource_not_found: an unknown generation id or model."""


class GenerationFailed(PermanentJobError):
    """The generation ended ``failed`` for a reason tied to this job (parameters, filters)."""

    def __init__(self, message: str, *, generation_id: str | None = None) -> None:
        super().__init__(message, error_type="generation_failed")
        self.generation_id = generation_id


class ResultUrlExpired(PermanentJobError):
    """The presigned result URL was refused; ``get()`` the generation for a fresh one."""


class ResultTooLarge(PermanentJobError):
    """The result file is larger than the caller's ``max_bytes``."""

    def __init__(self, message: str, *, max_bytes: int) -> None:
        super().__init__(message, error_type="result_too_large")
        self.max_bytes = max_bytes


class RefusedUrl(PermanentJobError):
    """A URL to fetch, or a redirect hop, is not https or points inside the network."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_type="refused_url")


class RunFatalError(ProviderError, RunFatal):
    """Stop the whole run: every further call would fail the same way."""


class Unauthenticated(RunFatalError):
    """401 / unauthenticated: the API key is missing, wrong or revoked."""


class InsufficientCredits(RunFatalError):
    """The account ran out of credits (any status, or a failed generation saying so)."""


class Creation(Enum):
    """What a failed enqueue (or retry) may have created at the provider."""

    NONE = "refused before anything was created: send again after a backoff"
    LISTED = "the origin answered: anything it created is listed now, so look at once"
    UNKNOWN = "the answer was lost: look after the grace time, never send blindly"


def creation(exc: ProviderError) -> Creation:
    """The one answer to "may this failed enqueue have created a generation?"."""
    if isinstance(exc, EnqueueOutcomeUnknown):
        return Creation.UNKNOWN
    if isinstance(exc, ServerError):
        return Creation.LISTED if exc.status_code in ORIGIN_STATUSES else Creation.UNKNOWN
    return Creation.NONE

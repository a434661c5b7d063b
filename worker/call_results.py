"""The error policy of the throttles: what a provider call's result says about the
provider, so the limiter knows whether to slow down, open its breaker, or go on.

RATE_LIMITED (a 429) halves the rate and holds every worker for its Retry-After;
FAILURE (the provider down, unreachable, or its answer lost) counts towards the
breaker; any other answer, even a refusal, is OK: the provider is up and within its
limits. A local failure (writing the result, a bug) says nothing about the provider and
is not reported at all. The values are the report operations of
``worker/lua/throttle.lua``.
"""

from __future__ import annotations

from enum import StrEnum

from provider.errors import (
    EnqueueOutcomeUnknown,
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ResultWriteError,
    ServerError,
)

# The provider is down or unreachable (for EnqueueOutcomeUnknown: the answer was lost).
_FAILURES = (
    ServerError,
    ProviderTimeout,
    ProviderConnectionError,
    MalformedResponse,
    EnqueueOutcomeUnknown,
)


class CallResult(StrEnum):
    """What a throttled provider call came to, as the limiter counts it."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    FAILURE = "failure"


def result_of(error: BaseException | None) -> CallResult | None:
    """How a provider call's result should be reported; None: it says nothing about the
    provider (a local failure, a bug), so report nothing."""
    if error is None:
        return CallResult.OK
    if isinstance(error, RateLimited):
        return CallResult.RATE_LIMITED
    if isinstance(error, _FAILURES):
        return CallResult.FAILURE
    if isinstance(error, ResultWriteError):
        return None
    # Permanent and run-fatal errors are answers: the provider is up and within its limits.
    return CallResult.OK if isinstance(error, ProviderError) else None

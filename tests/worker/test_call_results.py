"""The throttles' error policy: which provider errors slow the limiter down, open its
breaker, or count as answers."""

from __future__ import annotations

import pytest

from provider.errors import (
    EnqueueOutcomeUnknown,
    InsufficientCredits,
    InvalidRequest,
    ProviderTimeout,
    RateLimited,
    ResultWriteError,
    ServerError,
)
from worker.call_results import CallResult, result_of


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (None, CallResult.OK),
        (RateLimited("slow down", status_code=429, retry_after_s=2), CallResult.RATE_LIMITED),
        (ServerError("boom", status_code=502), CallResult.FAILURE),
        (ProviderTimeout("timeout"), CallResult.FAILURE),
        (EnqueueOutcomeUnknown("lost"), CallResult.FAILURE),
        (InvalidRequest("bad", status_code=422), CallResult.OK),
        (InsufficientCredits("broke", status_code=402), CallResult.OK),
        (ResultWriteError("disk full"), None),
        (KeyError("bug"), None),
    ],
)
def test_result_of(error: BaseException | None, result: CallResult | None) -> None:
    assert result_of(error) is result

from __future__ import annotations

import pytest

from worker.retry import RetryPolicy, compute_backoff, next_delay


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, 2.5),
        (1, 1.0, 5.0),
        (2, 1.0, 10.0),
        (3, 0.5, 15.0),
        (10, 1.0, 300.0),
        (60, 0.0, 150.0),
    ],
)
def test_compute_backoff(attempt: int, rand: float, expected: float) -> None:
    assert compute_backoff(
        attempt, base_s=5.0, max_s=300.0, jitter=0.5, rand=rand
    ) == pytest.approx(expected)


POLICY = RetryPolicy(base_s=1.0, max_delay_s=60.0, max_attempts=5, max_total_s=100.0)


@pytest.mark.parametrize(
    ("attempt", "elapsed", "retry_after", "expected"),
    [
        (1, 0.0, None, 1.0),
        (4, 10.0, None, 8.0),
        (5, 10.0, None, None),  # out of attempts
        (2, 100.0, None, None),  # out of time
        (2, 99.0, None, None),  # the delay would cross the time bound
        (1, 0.0, 30.0, 30.0),  # Retry-After is a floor
        (1, 0.0, 1000.0, 60.0),  # ...capped by the longest delay
    ],
)
def test_next_delay(
    attempt: int, elapsed: float, retry_after: float | None, expected: float | None
) -> None:
    got = next_delay(
        POLICY, attempt=attempt, elapsed_s=elapsed, retry_after_s=retry_after, rand=1.0
    )
    assert got == (pytest.approx(expected) if expected is not None else None)

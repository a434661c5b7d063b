"""Budgets as the command line shows them and as the submit step reads a budget pause
(seedq.budget, cli.progress): which pause lets admitted jobs go, when a followed run is
over, and the summary's budget line."""

from __future__ import annotations

import fakeredis
import pytest

from cli.progress import budget_line, is_over
from seedq.admission import budget_reason
from seedq.budget import Budgets, BudgetState, admitted_may_start, paused_by_budget
from seedq.errors import SeedqError
from seedq.store import RunInfo


def run(status: str, counts: dict[str, int], *, reason: str = "", total: int = 4) -> RunInfo:
    return RunInfo(
        id="r1",
        name="example",
        created_at=0.0,
        status=status,
        total=total,
        counts=counts,
        meta={},
        reason=reason,
    )


BUDGET_PAUSE = budget_reason(0.77, 1.0, 0.48)


@pytest.mark.parametrize(
    ("status", "reason", "may_start"),
    [
        ("paused", BUDGET_PAUSE, True),
        ("paused", "paused by an operator", False),
        ("paused", "provider rejected the API key", False),
        ("paused", "outside its submission window 22:00-06:00", False),
        ("cancelled", BUDGET_PAUSE, False),  # a cancel keeps no reason of its own
        ("active", "", False),  # admitting anyway: the question is not asked
    ],
)
def test_only_a_budget_pause_lets_admitted_jobs_go(
    status: str, reason: str, may_start: bool
) -> None:
    assert admitted_may_start(status, reason) is may_start
    assert paused_by_budget(status, reason) is may_start


def test_a_paused_run_is_over_only_when_its_admitted_jobs_are_done() -> None:
    paused = run("paused", {"registered": 4}, reason=BUDGET_PAUSE)
    assert not is_over(paused, holding=2)  # admitted, not sent yet: they fit the budget
    assert is_over(paused, holding=0)
    going = run("paused", {"registered": 2, "generated": 1, "delivered": 1}, reason=BUDGET_PAUSE)
    assert not is_over(going, holding=0)
    done = run("paused", {"registered": 2, "delivered": 2}, reason=BUDGET_PAUSE)
    assert is_over(done, holding=0)
    assert is_over(run("active", {"delivered": 4}), holding=0)
    assert not is_over(run("active", {"registered": 4}), holding=0)


def test_the_budget_line_says_what_was_spent_and_what_waits() -> None:
    paused = run("paused", {"registered": 2, "delivered": 2}, reason=BUDGET_PAUSE)
    spent = BudgetState(cap=1.0, spent=0.768)
    assert budget_line(paused, spent, "`seedq resume r1 --budget AMOUNT` raises the cap") == (
        "budget: spent 0.77 of 1.00; 2 job(s) wait for more budget: "
        "`seedq resume r1 --budget AMOUNT` raises the cap"
    )
    assert budget_line(paused, spent, None) == (
        "budget: spent 0.77 of 1.00; 2 job(s) wait for more budget"
    )
    finished = run("active", {"delivered": 4})
    assert budget_line(finished, BudgetState(cap=5.0, spent=1.5), None) == (
        "budget: spent 1.50 of 5.00"
    )
    under_way = BudgetState(cap=5.0, reserved=0.4, spent=1.0)
    assert budget_line(run("active", {"delivered": 3, "submitted": 1}), under_way, None) == (
        "budget: spent 1.00 of 5.00 (0.40 more reserved by jobs under way)"
    )
    assert budget_line(finished, BudgetState(), None) is None  # no cap, no line


def test_caps_are_set_and_read_back() -> None:
    budgets = Budgets(fakeredis.FakeRedis())
    assert budgets.state("r1") == BudgetState()
    budgets.set_cap("r1", 1.0)
    budgets.set_cap("r1", 2.5)  # raised
    assert budgets.state("r1") == BudgetState(cap=2.5)
    with pytest.raises(SeedqError, match="negative"):
        budgets.set_cap("r1", -1.0)

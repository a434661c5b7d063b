"""`seedq resume RUN --budget AMOUNT` on a real Redis (cli.control): a run its budget
paused gets the new cap, goes on, and its next jobs are sent to the broker."""

from __future__ import annotations

import pytest
import redis
from typer.testing import CliRunner

from cli.main import app
from producer.jobs import JobSpec
from seedq import contract
from seedq.admission import Admission
from seedq.store import JobStore

RUN = "run-budget"


@pytest.mark.redis
def test_resume_with_a_budget_raises_the_cap_of_a_run_its_budget_paused(
    real_redis: redis.Redis, real_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDQ_BROKER_URL", real_redis_url)
    monkeypatch.setenv("SEEDQ_REDIS_URL", real_redis_url)
    store = JobStore(real_redis)
    admission = Admission(store, max_in_flight=10, lease_s=300)
    store.create_run(RUN, "nightly", {})
    specs = [
        JobSpec(f"j{i}", "m.csv", i + 2, "model", {"prompt": f"p{i}"}, "x.mp4", est_cost=0.5)
        for i in range(4)
    ]
    for _ in store.register(RUN, [(s.id, s.fingerprint, s.to_record()) for s in specs]):
        pass
    admission.budgets.set_cap(RUN, 1.0)
    store.set_run_status(RUN, "active")
    assert len(admission.admit()) == 2 and store.run_status(RUN) == "paused"

    result = CliRunner().invoke(app, ["resume", RUN, "--budget", "2.5"])

    assert result.exit_code == 0, result.output
    assert "budget cap 1.00 -> 2.50 (1.00 committed so far)" in result.output
    assert store.run_status(RUN) == "active"
    assert admission.budgets.state(RUN).cap == 2.5
    assert admission.holding(RUN) == 4
    assert real_redis.llen(contract.QUEUE_SUBMIT) == 2  # the two jobs the new cap let in


def test_a_negative_budget_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["resume", RUN, "--budget", "-1"])
    assert result.exit_code == 2

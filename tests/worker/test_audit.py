"""The audit's decisions (worker.audit_rules, worker.ownership), pure: job records, the
provider's succeeded generations, generation owners and stored objects in; findings out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from provider.models import Generation
from storage.base import StoredObject
from worker.audit_facts import JobFacts, OutputFacts, job_facts
from worker.audit_rules import audit
from worker.findings import Kind, Repair

MODEL = "bytedance-seedance-2-0-image-to-video"
NOW = 1_000.0
IMAGE = "https://inputs.example/red.png"
SHA = "a" * 64


def sent(prompt: str = "a red mug") -> dict[str, Any]:
    return {"prompt": prompt, "input_image": IMAGE, "duration": 4}


def gen(
    gid: str, prompt: str = "a red mug", *, at: float = 500.0, status: str = "succeeded"
) -> Generation:
    return Generation.model_validate(
        {
            "generation_id": gid,
            "model_name": MODEL,
            "status": status,
            "prompt": prompt,
            "input_image": IMAGE,
            "duration": 4,
            "enqueued_at": at,
            "result_url": f"https://results.example/{gid}.mp4?sig=secret",
        }
    )


def job(jid: str, state: str, gid: str | None = None, **kw: Any) -> JobFacts:
    values: dict[str, Any] = {
        "model": MODEL,
        "output_key": f"{jid}.mp4",
        "created_at": 100.0,
        "sent_params": sent(),
    }
    if state == "delivered":
        values |= {"size_bytes": 1000, "sha256": SHA + jid}
    return JobFacts(id=jid, state=state, generation_id=gid, **(values | kw))


def stored(
    jid: str, *, size: int = 1000, sha: str | None = None, side: Any = "same"
) -> OutputFacts:
    digest = sha if sha is not None else SHA + jid
    sidecar = {"job_id": jid, "video": {"size_bytes": 1000, "sha256": SHA + jid}}
    return OutputFacts(
        StoredObject(f"/out/{jid}.mp4", size, digest), sidecar if side == "same" else side
    )


def found(
    jobs: list[JobFacts],
    gens: list[Generation],
    owners: dict[str, str] | None = None,
    outputs: dict[str, OutputFacts] | None = None,
) -> set[tuple[str, str, str, str]]:
    delivered = {j.id: stored(j.id) for j in jobs if j.state == "delivered"}
    result = audit(jobs, gens, owners or {}, delivered | (outputs or {}), now=NOW)
    return {(str(f.kind), f.job_id, f.generation_id, str(f.repair)) for f in result}


PAID, DUP = str(Kind.PAID_NOT_DELIVERED), str(Kind.DUPLICATE_GENERATION)
DELIVER, REDELIVER, NONE = str(Repair.DELIVER), str(Repair.REDELIVER), str(Repair.NONE)

GENERATIONS = [
    pytest.param(
        [job("j1", "delivered", "g1")], [gen("g1")], {"g1": "j1"}, set(), id="delivered-clean"
    ),
    pytest.param(
        [job("j1", "failed", "g1")],
        [gen("g1")],
        {"g1": "j1"},
        {(PAID, "j1", "g1", DELIVER)},
        id="failed-delivery-of-a-paid-generation",
    ),
    pytest.param(
        [job("j1", "generated", "g1")],
        [gen("g1")],
        {"g1": "j1"},
        {(PAID, "j1", "g1", DELIVER)},
        id="generated-not-delivered-yet",
    ),
    pytest.param(
        [job("j1", "registered")],
        [gen("g1")],
        {},
        {(PAID, "j1", "g1", DELIVER)},
        id="moved-back-job-with-an-unclaimed-match",
    ),
    pytest.param(
        [job("j1", "submitting")],
        [gen("g1")],
        {},
        {(PAID, "j1", "g1", NONE)},  # reported; the job's own reconcile adopts it
        id="crash-after-enqueue-left-to-the-reconcile",
    ),
    pytest.param(
        [job("j1", "delivered", "g1")],
        [gen("g1"), gen("g2", at=600.0)],
        {"g1": "j1"},
        {(DUP, "j1", "g2", NONE)},
        id="delivered-job-paid-twice-unclaimed",
    ),
    pytest.param(
        [job("j1", "delivered", "g1")],
        [gen("g1"), gen("g2")],
        {"g1": "j1", "g2": "j1"},
        {(DUP, "j1", "g2", NONE)},
        id="delivered-job-paid-twice-claimed",
    ),
    pytest.param(
        [job("j1", "failed"), job("j2", "failed")],
        [gen("g1"), gen("g2", at=501.0)],
        {},
        {(PAID, "j1", "g1", DELIVER), (PAID, "j2", "g2", DELIVER)},
        id="twins-each-adopt-one",
    ),
    pytest.param(
        [job("j1", "failed")],
        [gen("g1"), gen("g2", at=501.0)],
        {},
        {(PAID, "j1", "g1", DELIVER), (DUP, "j1", "g2", NONE)},
        id="two-unowned-matches-the-first-delivers-the-second-is-paid-twice",
    ),
    pytest.param(
        [job("j1", "delivered", "g1"), job("j2", "registered")],
        [gen("g1"), gen("g2")],
        {"g1": "j1"},
        {(PAID, "j2", "g2", DELIVER)},
        id="unclaimed-goes-to-the-twin-still-needing-it",
    ),
    pytest.param(
        [job("j1", "failed")],
        [gen("g1", at=10.0)],
        {},
        set(),
        id="enqueued-before-the-job-existed",
    ),
    pytest.param(
        [job("j1", "failed")], [gen("g1", "another prompt")], {}, set(), id="other-parameters"
    ),
    pytest.param([job("j1", "failed", sent_params=None)], [gen("g1")], {}, set(), id="never-sent"),
    pytest.param(
        [job("j1", "failed")], [gen("g1")], {"g1": "other-run-job"}, set(), id="another-runs"
    ),
    pytest.param(
        [job("j1", "failed", "g1")],
        [gen("g1", status="failed")],
        {"g1": "j1"},
        set(),
        id="failed-generation-costs-nothing",
    ),
    pytest.param(
        [job("j1", "delivered", "g1"), job("j2", "failed", "g1")],
        [gen("g1")],
        {"g1": "j1"},
        {(str(Kind.SHARED_GENERATION), "j2", "g1", NONE)},
        id="two-jobs-claim-one-generation",
    ),
    pytest.param(
        [job("j1", "failed", "g1"), job("j2", "failed", "g1")],
        [gen("g1")],
        {},
        {(str(Kind.SHARED_GENERATION), "j2", "g1", NONE)},
        id="two-records-one-generation-no-owner",
    ),
    pytest.param(
        [job("j1", "submitted", "g0")],
        [gen("g1")],
        {"g0": "j1"},
        {(PAID, "j1", "g1", NONE)},
        id="paid-while-its-own-generation-runs",
    ),
]


@pytest.mark.parametrize(("jobs", "gens", "owners", "expected"), GENERATIONS)
def test_generations(
    jobs: list[JobFacts],
    gens: list[Generation],
    owners: dict[str, str],
    expected: set[tuple[str, str, str, str]],
) -> None:
    assert found(jobs, gens, owners) == expected


MISMATCH, MISSING = str(Kind.OUTPUT_MISMATCH), str(Kind.MISSING_OUTPUT)

OUTPUTS = [
    pytest.param(stored("j1"), set(), id="clean"),
    pytest.param(OutputFacts(None, None), {(MISSING, REDELIVER)}, id="missing"),
    pytest.param(stored("j1", size=999), {(MISMATCH, REDELIVER)}, id="size-differs"),
    pytest.param(stored("j1", sha="b" * 64), {(MISMATCH, REDELIVER)}, id="sha-differs"),
    pytest.param(stored("j1", sha=""), set(), id="store-without-digest-is-not-a-mismatch"),
    pytest.param(
        stored("j1", side={"job_id": "j9", "video": {}}),
        {(MISMATCH, REDELIVER)},
        id="sidecar-of-j9",
    ),
    pytest.param(
        stored("j1", side=None), {(str(Kind.MISSING_SIDECAR), REDELIVER)}, id="no-sidecar"
    ),
    pytest.param(
        OutputFacts(
            StoredObject("/out/j1.mp4", 1000, SHA + "j1"), stored("j1").sidecar, "no frames"
        ),
        {(str(Kind.INVALID_OUTPUT), REDELIVER)},
        id="does-not-decode",
    ),
]


@pytest.mark.parametrize(("facts", "expected"), OUTPUTS)
def test_outputs_of_delivered_jobs(facts: OutputFacts, expected: set[tuple[str, str]]) -> None:
    result = audit(
        [job("j1", "delivered", "g1")], [gen("g1")], {"g1": "j1"}, {"j1": facts}, now=NOW
    )
    assert {(str(f.kind), str(f.repair)) for f in result} == expected
    assert all(f.job_id == "j1" and f.generation_id == "g1" for f in result)


def test_two_jobs_on_one_output_key_are_duplicates_and_not_redelivered() -> None:
    jobs = [job("j1", "delivered", "g1"), job("j2", "delivered", "g2", output_key="j1.mp4")]
    outputs = {"j1": stored("j1"), "j2": stored("j1")}  # j2 overwrote j1's clip
    result = audit(jobs, [gen("g1"), gen("g2")], {"g1": "j1", "g2": "j2"}, outputs, now=NOW)
    kinds = {(str(f.kind), f.job_id, str(f.repair)) for f in result}
    assert (str(Kind.DUPLICATE_OUTPUT), "j2", NONE) in kinds
    assert all(f.repair is Repair.NONE for f in result)  # redelivering would clobber the other


@pytest.mark.parametrize("present", [True, False], ids=["also-here", "only-there"])
def test_output_recorded_in_another_store_is_not_redelivered(present: bool) -> None:
    """Delivered to /old/j1.mp4 while the configured store keeps it at /out/j1.mp4: two
    copies, or SEEDQ_OUTPUT differs from the workers'. A redelivery would add a copy."""
    moved = job("j1", "delivered", "g1", output_uri="/old/j1.mp4")
    facts = stored("j1") if present else OutputFacts(None, None)
    facts = OutputFacts(facts.video, facts.sidecar, uri="/out/j1.mp4")
    result = audit([moved], [gen("g1")], {"g1": "j1"}, {"j1": facts}, now=NOW)
    kind = Kind.DUPLICATE_OUTPUT if present else Kind.MISSING_OUTPUT
    assert [(f.kind, f.repair) for f in result] == [(kind, Repair.NONE)]
    assert "/old/j1.mp4" in result[0].reason and "/out/j1.mp4" in result[0].reason


def test_equal_videos_of_two_jobs_are_not_duplicates() -> None:
    """The simulator (and maybe a provider) renders equal bytes for different jobs."""
    jobs = [job("j1", "delivered", "g1"), job("j2", "delivered", "g2", sha256=SHA + "j1")]
    outputs = {"j1": stored("j1"), "j2": stored("j2", sha=SHA + "j1")}
    result = audit(jobs, [gen("g1"), gen("g2")], {"g1": "j1", "g2": "j2"}, outputs, now=NOW)
    assert [f.kind for f in result] == [Kind.OUTPUT_MISMATCH]  # only j2's sidecar disagrees


def test_findings_carry_no_url() -> None:
    result = audit([job("j1", "failed", "g1")], [gen("g1")], {"g1": "j1"}, {}, now=NOW)
    assert result and all("sig=" not in json.dumps(f.as_dict()) for f in result)


def test_job_facts_from_a_record() -> None:
    raw = {
        "state": "delivered",
        "spec": json.dumps({"model": MODEL, "output_key": "a/b.mp4", "params": {}}),
        "sent_params": json.dumps(sent()),
        "created_at": "12.5",
        "generation_id": "g1",
        "size_bytes": "1000",
        "sha256": SHA,
    }
    facts = job_facts("j1", raw)
    assert facts == JobFacts("j1", "delivered", MODEL, "a/b.mp4", 12.5, "g1", sent(), 1000, SHA, "")
    bare = job_facts("j2", {"state": "registered", "spec": "not json", "size_bytes": "x"})
    assert (bare.model, bare.sent_params, bare.size_bytes, bare.generation_id) == (
        "",
        None,
        None,
        None,
    )


# -- the billed total ---------------------------------------------------------------------


def billed(jid: str, gid: str | None, cost: float | None, stuck: str | None = None) -> JobFacts:
    return job(jid, "delivered", gid, billed_cost=cost, stuck_generation_id=stuck)


@pytest.mark.parametrize(
    ("jobs", "costs", "figures"),
    [
        ([billed("a", "g1", 0.384)], {"g1": 0.384}, None),  # agrees
        ([billed("a", "g1", 0.384), billed("b", "g2", 0.2)], {"g1": 0.384, "g2": 0.2}, None),
        ([billed("a", "g1", 0.1 + 0.2)], {"g1": 0.3}, None),  # float sums are not money
        ([billed("a", "g1", 0.384)], {"g1": 0.4}, (0.384, 0.4)),  # charged more
        ([billed("a", "g1", 0.384)], {"g1": None}, (0.384, 0.0)),  # not charged (yet)
        ([billed("a", "g1", 0.384)], {}, (0.384, 0.0)),  # the provider does not know it
        ([billed("a", "g1", None)], {"g1": 0.384}, None),  # not learned yet: not compared
        ([billed("a", None, 0.0)], {}, None),  # nothing made, nothing charged
        ([billed("a", "g2", 0.5, "g1")], {"g1": 0.1, "g2": 0.4}, None),  # stuck + retry
        ([billed("a", "g2", 0.4, "g1")], {"g1": 0.1, "g2": 0.4}, (0.4, 0.5)),  # retry forgotten
        # Two jobs recording one generation: charged once, so the totals differ.
        ([billed("a", "g1", 0.384), billed("b", "g1", 0.384)], {"g1": 0.384}, (0.768, 0.384)),
        # Figures swapped between two jobs: the totals agree, each job does not.
        (
            [billed("a", "g1", 0.2), billed("b", "g2", 0.384)],
            {"g1": 0.384, "g2": 0.2},
            (0.584, 0.584),
        ),
    ],
)
def test_billed_total_against_the_provider(
    jobs: list[JobFacts],
    costs: dict[str, float | None],
    figures: tuple[float, float] | None,
) -> None:
    found = [
        f for f in audit(jobs, [], {}, {}, now=NOW, costs=costs) if f.kind is Kind.BILLED_MISMATCH
    ]
    if figures is None:
        assert found == []
        return
    [mismatch] = found
    assert (mismatch.recorded, mismatch.reported) == pytest.approx(figures)
    assert (mismatch.job_id, mismatch.generation_id, mismatch.repair) == ("", "", Repair.NONE)
    row = mismatch.as_dict()
    assert (row["recorded_billed"], row["provider_billed"]) == pytest.approx(figures)
    assert f"${figures[0]:.4f}" in mismatch.reason and f"${figures[1]:.4f}" in mismatch.reason


def test_billed_mismatch_names_a_few_jobs_and_counts_the_rest() -> None:
    jobs = [billed(f"j{n}", f"g{n}", 1.0) for n in range(8)] + [billed("late", "gl", None)]
    costs: dict[str, float | None] = {f"g{n}": 2.0 for n in range(8)}
    costs["gl"] = 1.0
    [mismatch] = [
        f for f in audit(jobs, [], {}, {}, now=NOW, costs=costs) if f.kind is Kind.BILLED_MISMATCH
    ]
    assert "j0 (recorded $1.0000, provider $2.0000)" in mismatch.reason
    assert "j5" not in mismatch.reason and "and 3 more" in mismatch.reason
    assert "1 job(s) with no billed cost recorded yet" in mismatch.reason


def test_without_costs_the_billed_totals_are_not_compared() -> None:
    jobs = [billed("a", "g1", 0.384)]
    assert Kind.BILLED_MISMATCH in {f.kind for f in audit(jobs, [], {}, {}, now=NOW, costs={})}
    assert Kind.BILLED_MISMATCH not in {f.kind for f in audit(jobs, [], {}, {}, now=NOW)}


@pytest.mark.parametrize(
    ("raw", "cost", "stuck"),
    [
        ({"billed_cost": "0.384"}, 0.384, None),
        ({"billed_cost": ""}, None, None),
        ({"billed_cost": "n/a"}, None, None),
        ({"billed_cost": "nan"}, None, None),
        ({"stuck_generation_id": "g0"}, None, "g0"),
        ({}, None, None),
    ],
)
def test_job_facts_read_the_billed_fields(
    raw: dict[str, str], cost: float | None, stuck: str | None
) -> None:
    facts = job_facts("a", {"state": "delivered", "generation_id": "g1", **raw})
    assert (facts.billed_cost, facts.stuck_generation_id) == (cost, stuck)
    assert facts.owned == tuple(g for g in (stuck, "g1") if g)

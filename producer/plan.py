"""Validation pass over manifests: every problem at once, plus the plan (jobs, output
seconds and estimated cost by resolution)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from producer.errors import Problem
from producer.jobs import JobSpec
from producer.manifest import (
    GUARD_BATCH,
    DuplicateGuard,
    ModelResolver,
    ReadOptions,
    iter_manifest,
)
from seedq.modelinfo import billed_seconds, estimate_cost, price_source, rate_per_second


@dataclass(slots=True)
class Bucket:
    jobs: int = 0
    seconds: int = 0
    cost: float = 0.0
    auto_jobs: int = 0


@dataclass(frozen=True, slots=True)
class PriceKey:
    model: str
    resolution: str
    generate_audio: bool


@dataclass(frozen=True, slots=True)
class PriceUsed:
    """The price per output second an estimate used, and the published field it is."""

    per_second: float
    field: str


@dataclass(slots=True)
class Plan:
    """Totals of a valid set of manifests, for the operator to read before paying."""

    currency: str = "USD"
    models: set[str] = field(default_factory=set)
    by_resolution: dict[str, Bucket] = field(default_factory=dict)
    auto_estimate_s: int = 10
    prices: dict[PriceKey, PriceUsed] = field(default_factory=dict)

    def add(self, job: JobSpec, cost: float, seconds: int) -> None:
        bucket = self.by_resolution.setdefault(str(job.params.get("resolution")), Bucket())
        bucket.jobs += 1
        bucket.seconds += seconds
        bucket.cost += cost
        bucket.auto_jobs += job.params.get("duration") == -1
        self.models.add(job.model)

    @property
    def total(self) -> Bucket:
        out = Bucket()
        for b in self.by_resolution.values():
            out.jobs += b.jobs
            out.seconds += b.seconds
            out.cost += b.cost
            out.auto_jobs += b.auto_jobs
        return out


@dataclass(slots=True)
class CheckResult:
    plan: Plan
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]


def iter_jobs(
    paths: list[Path], opts: ReadOptions, resolve_model: ModelResolver
) -> Iterator[JobSpec | Problem]:
    """Every job of every manifest, with duplicate ids and output keys across them
    refused; in file order, checked against each other ``GUARD_BATCH`` jobs at a time."""
    guard = DuplicateGuard()
    held: list[JobSpec | Problem] = []

    def release() -> Iterator[JobSpec | Problem]:
        verdicts = iter(guard.check_many([i for i in held if isinstance(i, JobSpec)]))
        for item in held:
            dupes: list[Problem] = next(verdicts) if isinstance(item, JobSpec) else []
            if dupes:
                yield from dupes
            else:
                yield item
        held.clear()

    try:
        jobs = 0
        for path in paths:
            for item in iter_manifest(path, opts, resolve_model):
                held.append(item)
                jobs += isinstance(item, JobSpec)
                if jobs >= GUARD_BATCH:
                    yield from release()
                    jobs = 0
        yield from release()
    finally:
        guard.close()


def check(
    paths: list[Path],
    opts: ReadOptions,
    resolve_model: ModelResolver,
    *,
    auto_estimate_s: int,
    on_job: Callable[[JobSpec], None] | None = None,
) -> CheckResult:
    """Validate everything, keeping only totals and problems in memory."""
    plan = Plan(auto_estimate_s=auto_estimate_s)
    problems: list[Problem] = []
    for item in iter_jobs(paths, opts, resolve_model):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        model = resolve_model(item.model)
        plan.currency = model.pricing.currency
        seconds = billed_seconds(int(item.params.get("duration", -1)), auto_estimate_s)
        resolution = str(item.params.get("resolution"))
        audio = bool(item.params.get("generate_audio"))
        cost = estimate_cost(
            model.pricing, seconds=seconds, resolution=resolution, generate_audio=audio
        )
        key = PriceKey(item.model, resolution, audio)
        if key not in plan.prices:
            plan.prices[key] = PriceUsed(
                rate_per_second(model.pricing, resolution=resolution, generate_audio=audio),
                price_source(model.pricing, resolution=resolution, generate_audio=audio),
            )
        plan.add(item, cost, seconds)
        if on_job:
            on_job(replace(item, est_cost=round(cost, 6)))
    return CheckResult(plan, problems)

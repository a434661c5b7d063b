"""Reading a long account history: one reconcile and one audit, the new way beside the
old way, against the same simulator in one run.

    python bench/reconcile.py [--history 100000] [--jobs 1000]

The simulator starts in this process with ``--history`` past generations. Then:

- **reconcile**: a job left ``submitting`` by a worker that died right after its
  enqueue reached the provider. New: the submit step's reconcile (the active rows, then
  pages of the model's history back to the send, ``worker.submitting``). Old: the five
  unbounded ``GET /api/ai/queue?status=...`` lists it made before, and the same matching.
- **audit** of a run of ``--jobs`` jobs, each with its succeeded generation. New:
  ``worker.auditor.gather`` (pages of the model's succeeded generations back to the
  run's creation, plus a billed row per owned generation those pages lack). Old: the
  same gather fed by one unbounded ``GET /api/ai/queue?status=succeeded`` per model.

Prints JSON: for each, provider calls by endpoint, bytes read (response bodies), wall
time, and what was decided: the adopted generation; the audit's findings by kind, every
job paid and not delivered both ways (the bench records them submitted). Each job
recorded what the simulator charges, so the new way finds no billed_mismatch; the old
list's rows carry no cost, so with it the provider seems to have charged nothing (one
billed_mismatch): the old way could not compare bills at all. The job store is
fakeredis (no Redis needed): only the provider's side is measured. Wall times are this
machine's, for comparison within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import fakeredis
import httpx
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from producer.jobs import JobSpec  # noqa: E402
from provider.client import OxenClient  # noqa: E402
from provider.models import GenerationPage  # noqa: E402
from provider.protocol import Provider  # noqa: E402
from seedq.admission import admission_for  # noqa: E402
from seedq.contract import JobState  # noqa: E402
from seedq.modelinfo import estimate_cost, load_shipped_model  # noqa: E402
from seedq.settings import DEFAULT_MODEL, Settings  # noqa: E402
from seedq.store import JobStore  # noqa: E402
from simulator.config import SimConfig  # noqa: E402
from simulator.server import running_simulator  # noqa: E402
from storage.local import LocalStorage  # noqa: E402
from worker.auditor import findings, gather  # noqa: E402
from worker.inputs import LoopbackInputPublisher  # noqa: E402
from worker.reconcile import reconcile  # noqa: E402
from worker.retry import RetryPolicy  # noqa: E402
from worker.runtime import Runtime, poll_throttle, submit_throttle  # noqa: E402
from worker.submitting import submit_job  # noqa: E402

KEY = "bench-key"
OLD_STATUSES = ("queued", "processing", "succeeded", "failed", "cancelled")
PARAMS = {"input_image": "https://inputs.example/p.png", "resolution": "480p", "duration": 4}


class CountingTransport(httpx.HTTPTransport):
    """Counts the bytes of every response body read through it."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        body = response.read()
        self.bytes_read += len(body)
        return httpx.Response(
            response.status_code, headers=response.headers, content=body, request=request
        )


@contextmanager
def measured(provider: Provider, transport: CountingTransport) -> Iterator[dict[str, Any]]:
    """Calls by endpoint, bytes read and wall time of the block, filled in at its end."""
    client = cast(OxenClient, provider)  # the bench builds its runtime on the real client
    figures: dict[str, Any] = {}
    calls0, bytes0, started = Counter(client.calls), transport.bytes_read, time.perf_counter()
    yield figures
    figures["wall_s"] = round(time.perf_counter() - started, 3)
    calls = Counter(client.calls)
    calls.subtract(calls0)
    figures["calls"] = {k: v for k, v in sorted(calls.items()) if v}
    figures["provider_calls"] = sum(figures["calls"].values())
    figures["bytes_read"] = transport.bytes_read - bytes0


def runtime(sim_url: str, folder: Path, transport: CountingTransport) -> Runtime:
    settings = Settings(
        provider_url=sim_url,
        oxen_api_key=SecretStr(KEY),
        allow_private_urls=True,
        output=str(folder / "out"),
        submit_rate="10000/s",
        poll_rate="10000/s",
        http_timeout_s=120.0,
    )
    store = JobStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    provider = OxenClient(
        settings.provider_url, KEY, timeout_s=120.0, transport=transport, allow_private_urls=True
    )
    return Runtime(
        settings=settings,
        store=store,
        provider=provider,
        storage=LocalStorage(folder / "out"),
        publisher=LoopbackInputPublisher(),
        policy=RetryPolicy(base_s=0.0, jitter=0.0),
        admission=admission_for(store, settings),
        submit_throttle=submit_throttle(store, settings),
        poll_throttle=poll_throttle(store, settings),
    )


def register(rt: Runtime, run_id: str, jobs: int) -> list[str]:
    rt.store.create_run(run_id, "bench", {})
    specs = [
        JobSpec(f"{run_id}-{n}", "bench", n + 1, DEFAULT_MODEL, params(run_id, n), f"{n}.mp4")
        for n in range(jobs)
    ]
    for _ in rt.store.register(run_id, [(s.id, s.fingerprint, s.to_record()) for s in specs]):
        pass
    rt.store.set_run_status(run_id, "active")
    return [s.id for s in specs]


def params(run_id: str, n: int) -> dict[str, Any]:
    return {"prompt": f"{run_id} clip {n}", **PARAMS}


def bench_reconcile(rt: Runtime, transport: CountingTransport) -> dict[str, Any]:
    """A job whose worker died right after its enqueue: both ways find its generation."""
    [job_id] = register(rt, "reconcile", 1)
    rt.admission.admit()
    sent = params("reconcile", 0)
    started = rt.now()
    rt.store.move(
        job_id,
        "reconcile",
        JobState.SUBMITTING,
        expect=[JobState.REGISTERED],
        sent_params=json.dumps(sent, sort_keys=True),
        submit_started_at=started,
        send_settled=1,
    )
    [created] = rt.provider.enqueue(DEFAULT_MODEL, sent)  # then the worker died

    with measured(rt.provider, transport) as old:
        listed = {}
        for status in OLD_STATUSES:
            for gen in rt.provider.list(model=DEFAULT_MODEL, status=status).generations:
                listed[gen.generation_id] = gen
        decided = reconcile(
            listed.values(),
            model=DEFAULT_MODEL,
            sent=sent,
            started_at=started,
            now=rt.now(),
            grace_s=0.0,
        )
    old["rows_listed"] = len(listed)
    old["adopted"] = decided.matches[0].generation_id == created.generation_id

    with measured(rt.provider, transport) as new:
        submit_job(rt, "reconcile", job_id)
    new["adopted"] = rt.store.job(job_id).get("generation_id") == created.generation_id
    return {"old": old, "new": new}


class UnboundedList:
    """The old audit's read as a history: one unbounded list of the status, one page."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def history(self, *, model: str | None = None, status: str | None = None, **_: Any) -> Any:
        listed = self.provider.list(model=model, status=status).generations
        rows = [g.model_dump(mode="json") for g in listed]
        return GenerationPage.model_validate({"generations": rows, "total_pages": 1})

    def billed(self, generation_id: str) -> Any:
        return self.provider.billed(generation_id)


def bench_audit(
    rt: Runtime, transport: CountingTransport, jobs: int, wait: Callable[[], None]
) -> dict[str, Any]:
    """A run of ``jobs`` jobs, each with its succeeded generation (recorded submitted,
    so the audit reports each as paid, not delivered: proof it found them all) and the
    bill the provider charges for it (so the billed totals are compared, and agree)."""
    ids = register(rt, "audit", jobs)
    pricing = load_shipped_model(DEFAULT_MODEL).pricing
    bill = estimate_cost(pricing, seconds=4, resolution="480p", generate_audio=False)
    for n, job_id in enumerate(ids):
        [gen] = rt.provider.enqueue(DEFAULT_MODEL, params("audit", n))
        rt.store.update_job(
            job_id, state="submitted", generation_id=gen.generation_id, billed_cost=bill
        )
        rt.store.claim_generation(gen.generation_id, job_id)
    wait()
    out: dict[str, Any] = {}
    for way, provider in (("old", UnboundedList(rt.provider)), ("new", rt.provider)):
        with measured(rt.provider, transport) as figures:
            facts = gather(rt.store, provider, rt.storage, "audit")
        kinds = Counter(str(f.kind) for f in findings(facts))
        figures["rows_read"] = len(facts.succeeded)
        figures["findings"] = dict(sorted(kinds.items()))
        out[way] = figures
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=100_000, help="past generations")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs of the audited run")
    args = parser.parse_args()
    config = SimConfig(
        history=args.history, fast=True, latency_s=(0.0, 0.01), max_concurrency=1000, seed=1
    )
    loaded = time.perf_counter()
    with running_simulator(config) as sim, tempfile.TemporaryDirectory() as folder:
        started_s = round(time.perf_counter() - loaded, 1)
        transport = CountingTransport()
        rt = runtime(sim.url, Path(folder), transport)

        def settled() -> None:
            while sim.stats()["queued"] + sim.stats()["processing"]:
                time.sleep(0.05)

        try:
            result = {
                "history": args.history,
                "simulator_start_s": started_s,
                "reconcile": bench_reconcile(rt, transport),
                f"audit_of_{args.jobs}_jobs": bench_audit(rt, transport, args.jobs, settled),
            }
        finally:
            rt.provider.close()
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

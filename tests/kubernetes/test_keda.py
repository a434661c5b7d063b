"""deploy/kubernetes/'s KEDA ScaledObjects: valid for KEDA's CRD schema, unknown fields
refused; scaling each worker Deployment (and no other) on metrics the exporter serves,
up from zero as soon as a run is submitted."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from typing import Any

import fakeredis
import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from producer.submit import submit
from producer.timing import RunTiming, TimedStore
from seedq import contract
from seedq.admission import Admission
from seedq.gauges import QueueCollector
from seedq.store import JobStore
from tests.kubernetes.manifests import OVERLAYS, REPO, WORKERS, Obj, by_name, objects
from tests.test_deploy import metric_names, served
from tests.test_gauges import scrape

KEDA_CRD = REPO / "tests" / "data" / "keda" / "keda.sh_scaledobjects.yaml"
SHARED_CRD = REPO.parent / "shared" / "schemas" / "keda" / KEDA_CRD.name


# -- schema -----------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones, as
    `kubectl apply` does (the API server would otherwise drop a misspelt field)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    return [strict(v) for v in schema] if isinstance(schema, list) else schema


@functools.cache
def scaledobject_schema() -> Obj:
    crd = yaml.safe_load(KEDA_CRD.read_text("utf-8"))
    [version] = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema: Obj = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"]["enum"] = [f"keda.sh/{version['name']}"]
    return schema


def test_the_keda_schema_is_the_shared_one() -> None:
    if not SHARED_CRD.exists():
        pytest.skip("no ../shared beside this clone")
    assert KEDA_CRD.read_bytes() == SHARED_CRD.read_bytes()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaledobjects_follow_kedas_crd(overlay: str) -> None:
    keda = [o for o in objects(overlay) if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in keda} == {"ScaledObject"}
    for obj in keda:
        jsonschema.validate(obj, scaledobject_schema())
    wrong = objects(overlay, "ScaledObject")[0]
    wrong["spec"]["minReplicas"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, scaledobject_schema())


def test_workers_are_scaled_by_keda_and_others_are_not() -> None:
    deployments = by_name("example", "Deployment")
    scaled = by_name("example", "ScaledObject")
    targets = {o["spec"]["scaleTargetRef"]["name"] for o in scaled.values()}
    assert targets == set(WORKERS) and len(scaled) == len(WORKERS)
    for name in WORKERS:
        assert "replicas" not in deployments[name]["spec"], f"{name}: KEDA sets it"
    for name in set(deployments) - set(WORKERS):
        assert deployments[name]["spec"]["replicas"] == 1, name
    budgets = by_name("example", "PodDisruptionBudget")
    for name in WORKERS:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert "minAvailable" not in budgets[name]["spec"], "a drain at zero replicas"


# -- autoscaling ------------------------------------------------------------------------


def triggers(overlay: str) -> Iterator[tuple[str, Obj]]:
    for name, obj in by_name(overlay, "ScaledObject").items():
        for trigger in obj["spec"]["triggers"]:
            yield name, trigger


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_reads_what_the_exporter_serves_where_the_overlay_says(overlay: str) -> None:
    for name, trigger in triggers(overlay):
        assert trigger["type"] == "prometheus", name
        meta = trigger["metadata"]
        assert ".invalid" not in meta["serverAddress"], f"{name}: set by the overlay"
        assert metric_names(meta["query"]) <= served() | {"vector"}, meta["query"]
        assert meta["activationThreshold"] == "0", "any waiting job wakes the workers"
        assert meta["ignoreNullValues"] == "false", "an absent series is no zero"
    for name, obj in by_name(overlay, "ScaledObject").items():
        assert obj["spec"]["minReplicaCount"] == 0, name
        queue = name.removeprefix("seedq-worker-")
        demand = obj["spec"]["triggers"][0]["metadata"]["query"]
        assert demand == f'max(seedq_queue_demand_jobs{{queue="{queue}"}})', name


def evaluate(query: str, samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    """The two query shapes the ScaledObjects use, evaluated over one scrape."""

    def select(metric: str, label: str, value: str) -> list[float]:
        return [v for (n, labels), v in samples.items() if n == metric and (label, value) in labels]

    selector = r'(\w+)\{(\w+)="(\w+)"\}'
    if m := re.fullmatch(rf"max\({selector}\)", query):
        return max(select(*m.groups()))
    m = re.fullmatch(rf"clamp_max\(sum\({selector}\) or vector\(0\), (\d+)\)", query)
    assert m, f"no evaluator for {query}"
    return min(sum(select(*m.groups()[:3])), float(m[4]))


def activations(client: fakeredis.FakeRedis) -> dict[str, bool]:
    """Which worker Deployments KEDA would start from zero, by one exporter scrape."""
    samples = scrape(QueueCollector(JobStore(client), lambda: []))
    active: dict[str, bool] = {}
    for name, trigger in triggers("example"):
        meta = trigger["metadata"]
        value = evaluate(meta["query"], samples)
        active[name] = active.get(name, False) or value > float(meta["activationThreshold"])
    return active


class Job:
    def __init__(self, i: int) -> None:
        self.id, self.fingerprint = f"job-{i}", f"fp-{i}"

    def to_record(self) -> dict[str, object]:
        return {"prompt": "p", "est_cost": 1.0, "fingerprint": self.fingerprint}


def submit_run(client: fakeredis.FakeRedis, timing: RunTiming) -> list[contract.JobMessage]:
    """`seedq submit` with no worker running: what it sends waits in the broker."""
    sent: list[contract.JobMessage] = []

    def send(task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0) -> None:
        sent.extend(messages)

    store = TimedStore(client, timing, clock=lambda: 1_800_000_000.0)
    admission = Admission(store, max_in_flight=2, lease_s=60)
    jobs = [Job(i) for i in range(3)]
    submit(jobs, store, send, admission=admission, name="t", manifests=["m.csv"])  # type: ignore[arg-type]
    return sent


def test_a_submitted_run_wakes_the_submit_workers() -> None:
    client = fakeredis.FakeRedis()
    assert activations(client) == dict.fromkeys(WORKERS, False), "zero when nothing waits"
    assert len(submit_run(client, RunTiming())) == 2  # admitted at once; one waits
    woken = activations(client)
    assert woken["seedq-worker-submit"]
    assert not woken["seedq-worker-track"] and not woken["seedq-worker-deliver"]


def test_a_run_held_for_later_keeps_one_submit_worker_for_the_tick() -> None:
    """`submit --at`: nothing is admitted, so no demand; its start is the tick's, which
    runs in the workers: one submit worker must be up to start it on time."""
    client = fakeredis.FakeRedis()
    assert submit_run(client, RunTiming(start_at=1_900_000_000.0)) == []
    samples = scrape(QueueCollector(JobStore(client), lambda: []))
    assert samples[("seedq_queue_demand_jobs", (("queue", "submit"),))] == 0
    assert activations(client)["seedq-worker-submit"]

"""Flower, as docker-compose.yml runs it, against a real worker and a real run: behind
basic auth, it shows the workers and each task by its name with ids-only arguments,
and no secret of the cluster's environment. A run meeting a provider that fails shows
the truth: RETRY for a transient error, FAILURE with the reason for a failed job (acked,
not redelivered), and the run and job ids in the task list."""

from __future__ import annotations

import ast
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seedq import contract
from simulator.server import serve_directory
from tests.conftest import S3_TEST_CREDENTIALS
from tests.e2e.cluster import API_KEY, Cluster
from tests.e2e.processes import running_flower

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(240)]
Manifest = Callable[[Path, list[dict[str, str]]], Path]

USER, PASSWORD = "ops", "flower-test-password"
ROWS = [
    {"id": f"flower-{i}", "prompt": f"a lamp turning at angle {i}", "input_image": "images/red.png",
     "duration": "4", "resolution": "480p"}
    for i in range(2)
]  # fmt: skip
TASK_NAMES = {contract.TASK_SUBMIT, contract.TASK_TRACK, contract.TASK_DELIVER}
EVERY_JOB_TASK = {contract.TASK_SUBMIT, contract.TASK_DELIVER}  # each job runs these
SECRETS = [API_KEY, S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]]


def until(what: str, check: Callable[[], Any], deadline_s: float, logs: Callable[[], str]) -> Any:
    """Poll ``check`` until it returns something truthy; Flower collects events as they come."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"Flower never showed {what}\n{logs()[-4000:]}")
        time.sleep(0.3)


@pytest.fixture
def flower(cluster: Any, tmp_path: Path) -> Iterator[tuple[Cluster, httpx.Client]]:
    """One worker, and Flower started as compose does (auth from FLOWER_BASIC_AUTH)."""
    c: Cluster = cluster(workers=1)
    with running_flower(c.env, USER, PASSWORD, tmp_path / "flower.log") as client:
        yield c, client


def test_flower_shows_workers_and_tasks_behind_basic_auth(
    flower: tuple[Cluster, httpx.Client], manifest: Manifest, tmp_path: Path
) -> None:
    c, client = flower
    auth = (USER, PASSWORD)

    def logs() -> str:
        return (tmp_path / "flower.log").read_text(errors="replace") + c.logs()

    def alive_workers() -> dict[str, bool]:
        # Heartbeats seen: Flower's event receiver is connected, so no task event is lost.
        r = client.get("/api/workers", params={"status": "true"}, auth=auth)
        return {k: v for k, v in r.json().items() if v} if r.status_code == 200 else {}

    until("the worker's heartbeat", alive_workers, 45, logs)
    for path in ("/api/workers", "/api/tasks"):
        assert client.get(path).status_code == 401
        assert client.get(path, auth=(USER, "wrong")).status_code == 401

    done = c.seedq("run", str(manifest(tmp_path, ROWS)), "--name", "flower", timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr + c.logs()[-4000:]

    def run_tasks() -> dict[str, Any]:
        tasks: dict[str, Any] = client.get("/api/tasks", auth=auth).json()
        mine = {k: t for k, t in tasks.items() if t.get("name") in TASK_NAMES}
        finished = [t for t in mine.values() if t["state"] == "SUCCESS"]
        names = {t["name"] for t in finished}
        deliveries = [t for t in finished if t["name"] == contract.TASK_DELIVER]
        # A generation that succeeded may be settled by the sweep's own status call,
        # with no track task (worker.ticker.track_here): a track task is not required.
        return mine if names >= EVERY_JOB_TASK and len(deliveries) >= len(ROWS) else {}

    tasks = until("the run's tasks", run_tasks, 30, logs)
    run_ids, job_ids = set(), set()
    for task in tasks.values():
        assert ast.literal_eval(task["args"]) == (), task
        kwargs = ast.literal_eval(task["kwargs"])
        assert set(kwargs) == {"run_id", "job_id"}, task
        run_ids.add(kwargs["run_id"])
        job_ids.add(kwargs["job_id"])
        assert task["worker"] in alive_workers(), task
    assert len(run_ids) == 1 and len(job_ids) == len(ROWS), tasks

    workers = client.get("/api/workers", params={"refresh": "true"}, auth=auth)
    assert workers.status_code == 200
    assert set(workers.json()) == set(alive_workers())
    queues = {q["name"] for w in workers.json().values() for q in w["active_queues"]}
    assert queues == set(contract.ALL_QUEUES)

    one = next(iter(tasks))
    seen = [
        workers.text,
        client.get("/api/tasks", auth=auth).text,
        client.get(f"/api/task/info/{one}", auth=auth).text,
        client.get("/metrics").text,
    ]
    for secret in SECRETS:
        assert not any(secret in body for body in seen), f"Flower shows {secret[:6]}..."


def alive(client: httpx.Client) -> dict[str, bool]:
    r = client.get("/api/workers", params={"status": "true"}, auth=(USER, PASSWORD))
    return {k: v for k, v in r.json().items() if v} if r.status_code == 200 else {}


def ours(client: httpx.Client) -> dict[str, Any]:
    tasks: dict[str, Any] = client.get("/api/tasks", auth=(USER, PASSWORD)).json()
    return {k: t for k, t in tasks.items() if t.get("name") in TASK_NAMES}


def test_flower_shows_retry_and_failure_with_the_reason(
    cluster: Any, manifest: Manifest, tmp_path: Path
) -> None:
    """The provider answers 5xx (quoting the bearer key back, as a careless gateway
    might) until a submit task has been retried; then one job's image trips the content
    filter. Flower shows the retried task as RETRY and the failed job's task as FAILURE,
    each with its reason and without the key, and the ids in its task list."""
    c: Cluster = cluster(workers=1, error_rate=1.0, echo_auth=True)
    auth = (USER, PASSWORD)
    manifest(tmp_path, [])  # writes the images
    with (
        running_flower(c.env, USER, PASSWORD, tmp_path / "flower.log") as client,
        serve_directory(tmp_path / "images") as base,  # the filter reads the image's URL
    ):

        def logs() -> str:
            return (tmp_path / "flower.log").read_text(errors="replace") + c.logs()

        until("the worker's heartbeat", lambda: alive(client), 45, logs)
        rows = [
            {**ROWS[0], "input_image": f"{base}/red.png"},
            {**ROWS[1], "id": "flower-face", "input_image": f"{base}/face-photo.png"},
        ]
        run = c.seedq_background("run", str(manifest(tmp_path, rows)), "--name", "failing")
        try:

            def retried() -> list[Any]:
                return [t for t in ours(client).values() if t["state"] == "RETRY"]

            retries = until("a RETRY", retried, 60, logs)
            c.sim.configure(error_rate=0.0)
            output, _ = run.communicate(timeout=150)
        finally:
            run.kill()
        assert run.returncode == 1, output + logs()[-4000:]  # some work failed
        face = c.jobs(["flower-face"])["flower-face"]
        assert face["state"] == "failed" and "content filter" in face["error"], face

        retry = retries[0]
        assert retry["name"] == contract.TASK_SUBMIT, retry
        assert "StepRetried('attempt " in retry["exception"], retry  # inside Celery's Retry(...)

        def failed() -> list[Any]:
            return [t for t in ours(client).values() if t["state"] == "FAILURE"]

        [failure] = until("the failed job's FAILURE", failed, 30, logs)
        assert failure["name"] == contract.TASK_TRACK, failure
        assert ast.literal_eval(failure["kwargs"])["job_id"] == "flower-face", failure
        assert failure["exception"].startswith("StepFailed('generation failed: "), failure
        assert "content filter" in failure["exception"], failure
        assert failure["worker"] in alive(client), failure

        # Acknowledged, not waiting to be redelivered: the broker holds no copy of it.
        unacked = c.store.hvals("unacked")
        assert not [m for m in unacked if failure["uuid"].encode() in m], unacked

        # The task list shows the ids and the reasons (Flower's default columns do not),
        # and a job id typed in its search box finds that job's tasks.
        page = client.get("/tasks", auth=auth)
        assert page.status_code == 200
        for column in ("kwargs", "exception"):
            assert f'data-column="{column}"' in page.text, column
        listed = client.get(
            "/tasks/datatable",
            params={
                "draw": 1, "start": 0, "length": 100, "search[value]": "flower-face",
                "order[0][column]": 0, "order[0][dir]": "desc", "columns[0][data]": "received",
            },
            auth=auth,
        )  # fmt: skip
        assert listed.status_code == 200, listed.text
        rows_shown = listed.json()["data"]
        assert rows_shown and all("flower-face" in r["kwargs"] for r in rows_shown), rows_shown
        assert {r["state"] for r in rows_shown} >= {"SUCCESS", "FAILURE"}, rows_shown
        assert all(face["run_id"] in r["kwargs"] for r in rows_shown), rows_shown

        seen = [
            client.get("/api/tasks", auth=auth).text,
            client.get(f"/api/task/info/{failure['uuid']}", auth=auth).text,
            client.get(f"/api/task/info/{retry['uuid']}", auth=auth).text,
            listed.text,
        ]
        for secret in SECRETS:
            assert not any(secret in body for body in seen), f"Flower shows {secret[:6]}..."

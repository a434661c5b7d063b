"""Secrets stay secret, end to end: one real run with distinctive secrets (the API key,
the S3 secret key and session token), a provider whose error bodies quote the
Authorization header, and every place an operator or a log collector can read searched
for them: worker logs (text and JSON), the broker's raw messages and the Redis job
store, Flower's API, the reports (jsonl, csv, html), the sidecars, the output of
``seedq run/status/runs/events``, and the reprs of the settings and clients."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import redis

from seedq import contract
from simulator.server import serve_directory
from tests.e2e.cluster import Cluster
from tests.e2e.processes import running_flower

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(150)]
Manifest = Callable[[Path, list[dict[str, str]]], Path]

API_KEY = f"sk-canary-{uuid.uuid4()}"
S3_SECRET = f"s3-secret-canary-{uuid.uuid4().hex}"
S3_TOKEN = f"s3-token-canary-{uuid.uuid4().hex}"
CANARIES = {
    "OXEN_API_KEY": API_KEY,
    "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    "AWS_SESSION_TOKEN": S3_TOKEN,
}
FLOWER_USER, FLOWER_PASSWORD = "ops", f"flower-{uuid.uuid4().hex[:8]}"
TASK_NAMES = {contract.TASK_SUBMIT, contract.TASK_TRACK, contract.TASK_DELIVER}


def fragments() -> dict[str, str]:
    """Each canary, and its last 12 characters (a truncated or split copy)."""
    found: dict[str, str] = {}
    for name, secret in CANARIES.items():
        found[secret] = name
        found[secret[-12:]] = f"{name} (last 12 characters)"
    return found


PRESIGNED_TOKEN = re.compile(r"X-Amz-Security-Token=([^&\"'\s<>]+)")


def without_presigned_tokens(page: str) -> str:
    """The HTML report's players are presigned links: with temporary credentials AWS puts
    the session token in each (documented in the README). Only there, and only it."""
    tokens = {unquote(t) for t in PRESIGNED_TOKEN.findall(page)}
    assert tokens <= {S3_TOKEN}, tokens
    return PRESIGNED_TOKEN.sub("X-Amz-Security-Token=[presigned]", page)


def leaks(where: str, text: str) -> list[str]:
    return [f"{where}: {what}" for fragment, what in fragments().items() if fragment in text]


class BrokerTap:
    """Reads every raw message in the Redis broker while the run goes: the queue lists and
    kombu's unacked hash, bodies base64-decoded (a substring search of the encoded form
    would find nothing)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> BrokerTap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.sample()

    def sample(self) -> None:
        raw: list[bytes | str] = []
        for queue in contract.ALL_QUEUES:
            raw += self.client.lrange(queue, 0, -1)
        raw += list(self.client.hgetall("unacked").values())
        for item in raw:
            self.seen.add(decode_message(item))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.seen if m.startswith("{")]


def decode_message(item: bytes | str) -> str:
    text = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
    try:
        data = json.loads(text)
    except ValueError:
        return text
    message = data[0] if isinstance(data, list) and data else data
    if isinstance(message, dict) and isinstance(message.get("body"), str):
        with suppress(ValueError):
            message["body"] = json.loads(base64.b64decode(message["body"]))
    return json.dumps(message)


def redis_dump(client: redis.Redis) -> str:
    """Every key and value of the test database (job store, throttles, broker)."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = decode_message(client.type(key))
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        else:
            value = kind
        parts.append(f"{key!r} {value!r}")
    return "\n".join(parts)


@contextmanager
def flower(c: Cluster, log: Path) -> Iterator[httpx.Client]:
    with running_flower(c.env, FLOWER_USER, FLOWER_PASSWORD, log) as client:
        client.auth = (FLOWER_USER, FLOWER_PASSWORD)
        yield client


def until(check: Callable[[], Any], deadline_s: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            found = check()
        except (httpx.TransportError, ValueError):
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"never saw {what}\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def test_no_secret_anywhere_after_a_real_run(
    cluster: Any, manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c: Cluster = cluster(
        workers=0,
        env={**CANARIES, "SEEDQ_BREAKER_THRESHOLD": "1000"},
        error_rate=0.2,
        rate_limit_rate=0.1,
        echo_auth=True,
    )
    seen: dict[str, str] = {}
    manifest(tmp_path, [])  # writes the images
    flower_log = tmp_path / "flower.log"
    with (
        flower(c, flower_log) as flower_api,
        serve_directory(tmp_path / "images") as base,
    ):
        c.start_worker()  # text logs
        c.env["SEEDQ_LOG_FORMAT"] = "json"
        c.start_worker()  # JSON logs
        del c.env["SEEDQ_LOG_FORMAT"]
        # Flower listens (and so receives task events) before any task is sent.
        until(lambda: flower_api.get("/api/workers").status_code == 200, 45, "Flower", flower_log)
        images = ["images/red.png", "images/blue.jpg", f"{base}/face-photo.png"]  # the last fails
        rows = [
            {"id": f"sec-{i}", "prompt": f"a canary-free clip {i}", "input_image": image,
             "duration": "4", "resolution": "480p"}
            for i, image in enumerate(images)
        ]  # fmt: skip
        path = manifest(tmp_path, rows)
        events = c.seedq_background("events")
        try:
            with BrokerTap(c.store) as tap:
                done = c.seedq("run", str(path), "--name", "security", "--report", "run.html")
        finally:
            events.terminate()
            seen["seedq events"] = events.communicate(timeout=15)[0]
        seen["seedq run"] = done.stdout + done.stderr
        assert "sec-2" in done.stdout and "failed" in done.stdout, seen["seedq run"]

        def flower_tasks() -> dict[str, Any]:
            tasks: dict[str, Any] = flower_api.get("/api/tasks").json()
            return tasks if {t.get("name") for t in tasks.values()} & TASK_NAMES else {}

        tasks = until(flower_tasks, 30, "the run's tasks in Flower", flower_log)
        seen["flower /api/tasks"] = json.dumps(tasks)
        seen["flower /api/workers"] = flower_api.get("/api/workers").text
        for task_id in list(tasks)[:5]:
            seen[f"flower task {task_id}"] = flower_api.get(f"/api/task/info/{task_id}").text

    # The broker carried ids only, and no secret.
    assert tap.messages, "the tap never saw a broker message"
    for message in tap.messages:
        body = message.get("body")
        if isinstance(body, list) and len(body) == 3:
            assert body[0] == [] and set(body[1]) == {"run_id", "job_id"}, message
    seen["broker messages"] = "\n".join(sorted(tap.seen))
    seen["redis (job store and broker)"] = redis_dump(c.store)

    run_id = json.loads(c.seedq("runs", "--json").stdout)[0]["id"]
    for fmt in ("jsonl", "csv", "html"):
        report = tmp_path / f"report.{fmt}"
        made = c.seedq("report", run_id, "--format", fmt, "--out", str(report))
        assert made.returncode == 0, made.stdout + made.stderr
        seen[f"report {fmt}"] = report.read_text(encoding="utf-8")
    seen["seedq run --report"] = (tmp_path / "run.html").read_text(encoding="utf-8")
    for page in ("report html", "seedq run --report"):
        seen[page] = without_presigned_tokens(seen[page])
    for args in (("status",), ("status", run_id), ("runs",), ("runs", "--json")):
        shown = c.seedq(*args)
        seen[f"seedq {' '.join(args)}"] = shown.stdout + shown.stderr

    listed = c.s3.list_objects_v2(Bucket=c.bucket, Prefix="out/").get("Contents", [])
    sidecars = [o["Key"] for o in listed if o["Key"].endswith(".json")]
    assert len(sidecars) == 2, listed
    for key in sidecars:
        seen[f"sidecar {key}"] = c.s3.get_object(Bucket=c.bucket, Key=key)["Body"].read().decode()

    logs = c.logs()
    seen["worker logs"] = logs
    seen["flower log"] = (tmp_path / "flower.log").read_text(errors="replace")
    assert any(line.startswith("{") for line in logs.splitlines()), "no JSON log line"
    # The simulator quoted the Authorization header in its 5xx and 429 bodies ...
    faults = c.sim.stats()["faults"]
    assert faults.get("server_error", 0) + faults.get("rate_limited", 0) > 0, faults

    # ... and an error built from such a body, in this process, says it without the key.
    from provider import errors as e
    from provider.client import OxenClient
    from seedq.settings import load_settings
    from storage import make_storage

    for name, value in {**c.env, **CANARIES}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    c.sim.configure(error_rate=1.0, rate_limit_rate=0.0)
    with OxenClient.from_settings(settings) as client, pytest.raises(e.ServerError) as info:
        client.get("gen-1")
    assert "[redacted]" in info.value.message
    storage = make_storage(settings)
    seen["reprs"] = "\n".join(
        [str(info.value), repr(info.value), repr(info.value.args), repr(vars(info.value)),
         repr(settings), str(settings), repr(settings.model_dump()), repr(client),
         repr(vars(client)), repr(storage), repr(vars(storage))]
    )  # fmt: skip

    found = [leak for where, text in seen.items() for leak in leaks(where, text)]
    assert not found, "secrets leaked:\n" + "\n".join(found)

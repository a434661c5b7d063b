"""``seedq submit --at/--window`` and the scheduled run task (fetch, validate, submit)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import fakeredis
import httpx
import pytest
import redis
from pydantic import SecretStr
from typer.testing import CliRunner

import worker.scheduled
from cli.main import app
from cli.timed import run_timing
from producer.submit import SubmitResult
from producer.timing import RunTiming, TimedStore
from provider.guard import guarded_client
from seedq import contract, keys
from seedq.errors import ConfigError
from seedq.schedules import parse_schedules
from seedq.settings import Settings
from seedq.store import JobStore
from simulator.config import SimConfig
from simulator.server import running_simulator
from worker.scheduled import FetchError, fetch_https, fetch_limit, fetch_manifest, run_schedule

Write = Callable[[str, str | bytes], Path]
runner = CliRunner()
PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=PARIS)


def test_run_timing_from_options() -> None:
    timing = run_timing("23:00", "22:00-06:00", "Europe/Paris", now=NOW)
    assert timing.start_at == datetime(2026, 6, 1, 23, 0, tzinfo=PARIS).timestamp()
    assert (timing.window, timing.tz) == ("22:00-06:00", "Europe/Paris")
    assert run_timing(None, None, "UTC", now=NOW) == RunTiming()
    with pytest.raises(ConfigError, match="in the past"):
        run_timing("2026-06-01T11:00", None, "UTC", now=NOW)
    with pytest.raises(ConfigError, match="time zone"):
        run_timing(None, "22:00-06:00", "Nowhere/Special", now=NOW)


def test_submit_rejects_bad_window_before_anything(write: Write) -> None:
    path = write("m.csv", "prompt,input_image\np,images/a.png\n")
    result = runner.invoke(app, ["submit", "--dry-run", "--window", "late", str(path)])
    assert result.exit_code == 2 and "HH:MM-HH:MM" in result.output


@pytest.mark.redis
def test_submit_at_registers_a_scheduled_run(
    write: Write, real_redis: redis.Redis, real_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = real_redis_url
    monkeypatch.setenv("SEEDQ_BROKER_URL", url)
    monkeypatch.setenv("SEEDQ_REDIS_URL", url)
    path = write("m.csv", "prompt,input_image\np,images/a.png\nq,images/b.jpg\n")
    at = "2099-01-01T03:00"
    args = ["submit", "--offline", "--at", at, "--window", "22:00-06:00", "--tz", "Europe/Paris"]
    result = runner.invoke(app, [*args, str(path)])
    assert result.exit_code == 0, result.output
    run_id = result.output.strip().splitlines()[-1]
    assert "scheduled: starts at 2099-01-01 03:00" in result.output
    run = JobStore(real_redis).run(run_id)
    assert run is not None and run.status == "scheduled" and run.total == 2
    assert real_redis.llen(contract.QUEUE_SUBMIT) == 0  # nothing sent: jobs wait in Redis
    fields = real_redis.hgetall(keys.run(run_id))
    assert fields[b"window"] == b"22:00-06:00" and fields[b"tz"] == b"Europe/Paris"
    assert real_redis.sismember(keys.TIMED_RUNS, run_id)


GOOD_ROWS = "prompt,input_image\np,images/a.png\nq,images/b.jpg\n"


def _schedule(manifest: str, window: str = "") -> str:
    extra = f"    window: '{window}'\n" if window else ""
    return (
        "- name: nightly\n  cron: '0 22 * * *'\n  timezone: Europe/Paris\n"
        f"  manifest: '{manifest}'\n  priority: 3\n  budget: 50\n" + extra.replace("    ", "  ")
    )


def _run(
    manifest: str, client: fakeredis.FakeRedis, window: str = "", settings: Settings | None = None
) -> tuple[SubmitResult | None, list[contract.JobMessage]]:
    (schedule,) = parse_schedules(_schedule(manifest, window))
    sent: list[contract.JobMessage] = []

    def send(task: str, messages: Sequence[contract.JobMessage], countdown_s: float = 0.0) -> None:
        sent.extend(messages)

    done = run_schedule(
        schedule,
        settings or Settings(),
        lambda timing: TimedStore(client, timing, clock=lambda: NOW.timestamp()),
        send,
        now=datetime(2026, 6, 1, 20, 0, tzinfo=UTC),
    )
    return done, sent


def test_scheduled_run_submits_a_valid_manifest(write: Write) -> None:
    path = write("m.csv", GOOD_ROWS)
    client = fakeredis.FakeRedis()
    done, sent = _run(str(path), client)
    assert done is not None and len(sent) == 2
    run = JobStore(client).run(done.run_id)
    assert run is not None and run.name == "nightly 2026-06-01" and run.status == "active"
    assert run.meta["priority"] == 3 and run.meta["budget"] == 50


def test_scheduled_run_validates_against_the_live_schema(write: Write) -> None:
    """Like seedq submit: with a key and a reachable provider, the provider's schema."""
    path = write("m.csv", GOOD_ROWS)
    with running_simulator(SimConfig()) as sim:
        settings = Settings(
            provider_url=sim.url, oxen_api_key=SecretStr("sk-sched"), allow_private_urls=True
        )
        done, sent = _run(str(path), fakeredis.FakeRedis(), settings=settings)
        asked = sim.stats()["requests"]
    assert done is not None and len(sent) == 2
    assert any(name.startswith("GET /api/ai/models/") for name in asked), asked


def test_scheduled_run_with_window_is_held_outside_it(write: Write) -> None:
    path = write("m.csv", GOOD_ROWS)
    client = fakeredis.FakeRedis()
    done, sent = _run(str(path), client, window="22:00-06:00")  # NOW is noon in Paris
    assert done is not None and sent == []
    run = JobStore(client).run(done.run_id)
    assert run is not None and run.status == "paused" and "22:00-06:00" in run.reason


def test_invalid_manifest_creates_no_run(write: Write, caplog: pytest.LogCaptureFixture) -> None:
    path = write("m.csv", "prompt,input_image\n,images/a.png\n")
    client = fakeredis.FakeRedis()
    done, sent = _run(str(path), client)
    assert done is None and sent == []
    assert client.zcard(keys.RUNS) == 0
    assert "no run was created" in caplog.text


def test_https_fetch_streams_with_a_size_cap(tmp_path: Path) -> None:
    body = json.dumps({"jobs": []}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/big":
            return httpx.Response(200, content=b"x" * 5000)
        if request.url.path == "/gone":
            return httpx.Response(404)
        return httpx.Response(200, content=body)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    fetch_https("https://h/m.yaml", tmp_path / "a.yaml", 1000, client)
    assert (tmp_path / "a.yaml").read_bytes() == body
    with pytest.raises(FetchError, match="larger than 1000 bytes"):
        fetch_https("https://h/big", tmp_path / "b.yaml", 1000, client)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_https("https://h/gone", tmp_path / "c.yaml", 1000, client)


def test_an_https_yaml_manifest_stops_downloading_at_the_yaml_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """YAML is read whole, so a scheduled YAML manifest is cut off at
    SEEDQ_MAX_YAML_MANIFEST_BYTES as it arrives, not after SEEDQ_MAX_MANIFEST_BYTES of
    it are on disk; a CSV one keeps the larger limit."""
    sent: list[int] = []

    def body() -> Iterator[bytes]:
        for _ in range(100):  # 100,000 bytes offered, in 1,000-byte chunks
            sent.append(1000)
            yield b"#" * 999 + b"\n"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    monkeypatch.setattr(
        worker.scheduled,
        "guarded_client",
        lambda **_: httpx.Client(transport=httpx.MockTransport(handler)),
    )
    settings = Settings(max_manifest_bytes=1_000_000, max_yaml_manifest_bytes=5000)
    with pytest.raises(FetchError) as info:
        fetch_manifest("https://h.example/night.yaml?sig=s3cr3t", tmp_path, settings)
    assert str(info.value) == (
        "https://h.example/night.yaml: larger than 5000 bytes for a YAML manifest "
        "(SEEDQ_MAX_YAML_MANIFEST_BYTES), which is read whole; a CSV manifest is streamed "
        "and may be larger"
    )
    assert sum(sent) <= 6000  # stopped at the limit, not at the end of the body
    sent.clear()
    path = fetch_manifest("https://h.example/night.csv", tmp_path, settings)
    assert path.stat().st_size == sum(sent) == 100_000


@pytest.mark.parametrize(
    ("name", "limit", "named"),
    [
        ("manifest.yaml", 5000, "SEEDQ_MAX_YAML_MANIFEST_BYTES"),
        ("manifest.yml", 5000, "SEEDQ_MAX_YAML_MANIFEST_BYTES"),
        ("manifest.csv", 1_000_000, "SEEDQ_MAX_MANIFEST_BYTES"),
    ],
)
def test_the_fetch_limit_follows_the_manifests_kind(name: str, limit: int, named: str) -> None:
    settings = Settings(max_manifest_bytes=1_000_000, max_yaml_manifest_bytes=5000)
    max_bytes, note = fetch_limit(Path(name), settings)
    assert max_bytes == limit and named in note
    # A YAML limit above the general one never loosens it (as the manifest reader).
    looser = Settings(max_manifest_bytes=1000, max_yaml_manifest_bytes=5000)
    assert fetch_limit(Path(name), looser) == (1000, " (SEEDQ_MAX_MANIFEST_BYTES)")


@pytest.mark.parametrize(
    ("location", "refusal"),
    [
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://inside.example/m.yaml", "resolves to 10.0.0.7"),
        ("http://h.example/m.yaml", "plain http"),
    ],
)
def test_https_fetch_checks_every_hop(tmp_path: Path, location: str, refusal: str) -> None:
    """A schedule's manifest URL goes through the fetch guard; a refusal names the rule
    and the URL without its query (a presigned link's signature stays out of the logs)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": location})

    dns = {"h.example": ["93.184.216.34"], "inside.example": ["10.0.0.7"]}
    with (
        guarded_client(
            allow_private=False,
            timeout=5,
            transport=httpx.MockTransport(handler),
            resolve=lambda host: dns[host],
        ) as client,
        pytest.raises(FetchError, match=refusal) as info,
    ):
        fetch_https("https://h.example/m.yaml?X-Amz-Signature=s3cr3t", tmp_path / "m", 1000, client)
    assert "s3cr3t" not in str(info.value)
    assert not (tmp_path / "m").exists()

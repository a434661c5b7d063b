"""The deliver step's download and verification under hostile files (issue 13): a
result URL that trickles is cut off at the deadline and the delivery retried (the job
is not lost), and a decompression bomb is refused without being decoded yet kept, as
every paid clip is. The real simulator over HTTP, the steps called directly."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import fakeredis
import pytest

from seedq.contract import TASK_DELIVER, JobState
from seedq.dispatch import celery_sender
from tests.fakes import FakeApp
from tests.provider.test_download_deadline import Drip
from tests.worker.test_steps import Pipeline, pipeline_on
from tests.worker.test_verify import make_bomb
from worker.delivery import QUARANTINE_PREFIX, deliver_job
from worker.errors import InvalidVideo
from worker.job import DONE, Next
from worker.runner import DELIVER, Ending, run_step
from worker.runtime import install_runtime


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    with pipeline_on(fakeredis.FakeRedis(server=fakeredis.FakeServer()), tmp_path) as p:
        yield p


@pytest.fixture
def trickle_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickling_download_is_retried_and_the_job_kept(
    pipeline: Pipeline, trickle_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    good_url = p.job("clip-1")["result_url"]
    p.rt.store.update_job("clip-1", result_url=trickle_url)
    monkeypatch.setattr(p.rt.provider, "download_deadline_s", 0.5)
    install_runtime(p.rt)
    try:
        end = run_step(p.rt, celery_sender(FakeApp()), DELIVER, run_id, "clip-1")
    finally:
        install_runtime(None)
    assert end.ending is Ending.RETRY and "0.5 s deadline" in end.reason
    job = p.job("clip-1")
    assert job["state"] == JobState.GENERATED and "deadline" in job["last_error"]

    # The retry, on a link that answers at a normal pace, delivers the clip.
    p.rt.store.update_job("clip-1", result_url=good_url)
    monkeypatch.setattr(p.rt.provider, "download_deadline_s", 60.0)
    assert deliver_job(p.rt, run_id, "clip-1") is DONE
    assert p.state("clip-1") is JobState.DELIVERED


def test_a_decompression_bomb_is_refused_and_kept(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipeline
    run_id = p.one_job()
    assert p.until_generated(run_id, "clip-1") == Next(TASK_DELIVER)
    bomb = make_bomb(p.folder / "bomb.mp4", side=8192, frames=30)

    def download(url: str, dest: Path, *, max_bytes: int, timeout_s: float | None = None) -> int:
        dest.write_bytes(bomb.read_bytes())
        return bomb.stat().st_size

    monkeypatch.setattr(p.rt.provider, "download", download)
    with pytest.raises(InvalidVideo, match="frame size 8192x8192") as raised:
        deliver_job(p.rt, run_id, "clip-1")
    kept = p.job("clip-1")["quarantine_uri"]
    assert kept and kept in str(raised.value)
    reasons = list((p.storage.root / QUARANTINE_PREFIX).glob("*.json"))
    assert len(reasons) == 1 and "8192x8192" in json.loads(reasons[0].read_text())["reason"]

"""`seedq run MANIFEST --out DIR` with OXEN_API_KEY and no broker: a paid run on one
machine, its state in a private append-only redis-server under DIR/.seedq.

The simulator stands in for the provider (SEEDQ_PROVIDER_URL, an API key it checks),
and the input images are served over HTTP by this test, as public images would be (they
outlive the run, unlike the loopback server of a killed seedq). Each test drives the
command line as a user does, in subprocesses, and reads the provider's own counters:
a clip enqueued twice is paid twice, whatever seedq's state says."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from simulator.config import SimConfig
from simulator.server import SimHandle, running_simulator
from tests.e2e.processes import REPO, kill, seedq_background, seedq_cli, wait_until

API_KEY = "sk-local-paid-run-secret-0123456789"
JOBS = 9

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server"),
]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@contextlib.contextmanager
def serving_images() -> Iterator[str]:
    """The sample images over HTTP on loopback: the stand-in for public image URLs."""
    handler = functools.partial(_Quiet, directory=str(REPO / "manifests" / "images"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def provider() -> Iterator[SimHandle]:
    config = SimConfig(api_key=API_KEY, latency_s=(4.0, 6.0), max_concurrency=3, keepalive_s=1.0)
    with running_simulator(config) as sim:
        yield sim


@pytest.fixture
def images() -> Iterator[str]:
    with serving_images() as url:
        yield url


@pytest.fixture
def paid_env(no_config_env: dict[str, str], provider: SimHandle) -> dict[str, str]:
    return {
        **no_config_env,
        "OXEN_API_KEY": API_KEY,
        "SEEDQ_PROVIDER_URL": provider.url,
        "SEEDQ_ALLOW_PRIVATE_URLS": "true",  # the stand-in provider is on loopback
        "SEEDQ_POLL_INTERVAL_S": "1",
        "SEEDQ_MAX_IN_FLIGHT": "3",
    }


def write_manifest(path: Path, images: str, n: int, *, changed: int | None = None) -> Path:
    rows = [
        {
            "id": f"clip-{i}",
            "prompt": f"clip {i} turns slowly" + (", then stops" if i == changed else ""),
            "input_image": f"{images}/lamp.jpg",
            "duration": "4",
            "resolution": "480p",
        }
        for i in range(n)
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def clips(out: Path) -> list[str]:
    return sorted(p.stem for p in out.glob("clip-*.mp4") if p.with_suffix(".json").exists())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text


@pytest.mark.timeout(300)
def test_killed_mid_run_resumes_without_paying_twice(
    tmp_path: Path, paid_env: dict[str, str], provider: SimHandle, images: str
) -> None:
    manifest = write_manifest(tmp_path / "clips.csv", images, JOBS)
    out = tmp_path / "out"
    first = seedq_background("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    try:
        wait_until(lambda: provider.stats()["enqueued"] >= 1, 120, "a first generation")
        # Two runs into one folder at once: the second is refused, sending nothing. (Asked
        # before the first clip: a slow start of it must not let the first run finish.)
        second = seedq_cli("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"another seedq run (pid {first.pid}) is using {out}" in second.stderr
        wait_until(lambda: len(clips(out)) >= 1, 120, "a first delivered clip")
        stats = provider.stats()
        assert len(clips(out)) < JOBS and stats["enqueued"] < JOBS, "killed too late to tell"
        redis_pid = int((out / ".seedq" / "redis.pid").read_text())
        first.send_signal(signal.SIGKILL)
        first_out, _ = first.communicate(timeout=30)
    finally:
        kill(first)
    assert "paid run on " + provider.url in first_out
    assert pid_alive(redis_pid)  # a killed run leaves its server behind; the next stops it

    again = seedq_cli("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming run" in again.stdout
    assert f"{JOBS} delivered" in again.stdout
    assert clips(out) == [f"clip-{i}" for i in range(JOBS)]
    stats = provider.stats()
    assert stats["duplicate_enqueues"] == 0
    assert stats["enqueued"] == JOBS == stats["by_status"]["succeeded"]
    assert not pid_alive(redis_pid)
    assert not (out / ".seedq" / "redis.pid").exists()  # stopped cleanly at the end
    sidecars = [(out / f"clip-{i}.json").read_text() for i in range(JOBS)]
    assert_no_secret(first_out, again.stdout, again.stderr, *sidecars)
    for path in (out / ".seedq").rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path

    third = seedq_cli("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"skipped {JOBS}: already delivered" in third.stdout
    assert provider.stats()["enqueued"] == JOBS


@pytest.mark.timeout(300)
def test_sidecars_prove_what_is_delivered_even_without_the_state(
    tmp_path: Path, paid_env: dict[str, str], provider: SimHandle, images: str
) -> None:
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "clips.csv", images, 3)
    done = seedq_cli("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert provider.stats()["enqueued"] == 3
    first_sidecar = json.loads((out / "clip-0.json").read_text())

    shutil.rmtree(out / ".seedq")  # only the folder's clips and sidecars remain
    write_manifest(manifest, images, 3, changed=1)  # clip-1 asks for something else now
    again = seedq_cli("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skipped 2: already delivered" in again.stdout
    stats = provider.stats()
    assert stats["enqueued"] == 4 and stats["duplicate_enqueues"] == 0
    assert json.loads((out / "clip-0.json").read_text()) == first_sidecar  # left untouched
    redone = json.loads((out / "clip-1.json").read_text())
    assert redone["params"]["prompt"] == "clip 1 turns slowly, then stops"


@pytest.mark.timeout(120)
def test_without_redis_server_nothing_is_paid_and_one_line_says_how_to_install_it(
    tmp_path: Path, paid_env: dict[str, str], provider: SimHandle, images: str
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    manifest = write_manifest(tmp_path / "clips.csv", images, 2)
    env = {**paid_env, "PATH": str(empty)}
    done = seedq_cli("run", str(manifest), "--out", str(tmp_path / "out"), env=env, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "redis-server" in lines[0] and "apt-get install redis-server" in lines[0]
    assert "brew install redis" in lines[0]
    assert provider.stats()["enqueued"] == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(120)
def test_demo_flag_pays_nothing_even_with_a_key(
    tmp_path: Path, paid_env: dict[str, str], provider: SimHandle, images: str
) -> None:
    """`python3 dev.py run` passes --demo: the main job stays free where a key is set."""
    manifest = write_manifest(tmp_path / "clips.csv", images, 1)
    out = tmp_path / "out"
    done = seedq_cli("run", "--demo", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--demo: demo run on the local simulator, nothing is paid" in done.stdout
    assert clips(out) == ["clip-0"]
    assert provider.stats()["requests"].get("POST /api/ai/queue", 0) == 0
    assert not (out / ".seedq").exists()


@pytest.mark.timeout(300)
def test_killed_with_enqueues_unanswered_reconciles_instead_of_resending(
    tmp_path: Path, paid_env: dict[str, str], provider: SimHandle, images: str
) -> None:
    """The worst moment to die: enqueues sent, their answers lost, jobs `submitting`.

    Every /api answer is lost (handled, then the connection closed) until the run is
    killed: each enqueue reaches the provider and creates a generation, and seedq never
    learns its id. The next run must find those generations, not pay for new ones."""
    manifest = write_manifest(tmp_path / "clips.csv", images, 3)
    out = tmp_path / "out"
    provider.configure(drop_after_rate=1.0)
    first = seedq_background("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    try:
        wait_until(lambda: provider.stats()["enqueued"] == 3, 120, "three unanswered enqueues")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    finally:
        kill(first)
    assert clips(out) == []
    provider.configure(drop_after_rate=0.0)

    again = seedq_cli("run", str(manifest), "--out", str(out), env=paid_env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 job(s) were in flight when the last run stopped" in again.stdout
    assert clips(out) == ["clip-0", "clip-1", "clip-2"]
    stats = provider.stats()
    assert stats["enqueued"] == 3 and stats["duplicate_enqueues"] == 0


@pytest.mark.timeout(300)
def test_s3_output_keeps_state_in_the_current_folder_and_local_images_go_to_s3(
    tmp_path: Path,
    paid_env: dict[str, str],
    provider: SimHandle,
    s3_server: str,
    s3_credentials: dict[str, str],
) -> None:
    """A remote provider cannot fetch local images: with the videos in S3 they are
    uploaded there and presigned; the run's state is in ./.seedq, and the sidecars in S3
    prove what a rerun must skip."""
    import boto3

    bucket = "local-paid-" + os.urandom(4).hex()
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=bucket)
    shutil.copy(REPO / "manifests" / "images" / "lamp.jpg", tmp_path / "lamp.jpg")
    manifest = write_manifest(tmp_path / "clips.csv", "", 2)
    manifest.write_text(manifest.read_text().replace("/lamp.jpg", "lamp.jpg"))
    env = {
        **paid_env,
        **s3_credentials,
        "SEEDQ_OUTPUT": f"s3://{bucket}/clips",
        "SEEDQ_S3_ENDPOINT_URL": s3_server,
    }
    done = seedq_cli("run", str(manifest), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"state kept in {tmp_path.resolve() / '.seedq'}" in done.stdout
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="clips/")
    names = sorted(o["Key"] for o in listed.get("Contents", []))
    assert {
        "clips/clip-0.mp4",
        "clips/clip-0.json",
        "clips/clip-1.mp4",
        "clips/clip-1.json",
    } <= set(names)
    assert provider.stats()["enqueued"] == 2

    shutil.rmtree(tmp_path / ".seedq")
    again = seedq_cli("run", str(manifest), env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skipped 2: already delivered" in again.stdout
    assert provider.stats()["enqueued"] == 2

"""The pipeline on real parts: a real Redis (or RabbitMQ) broker, real `celery worker`
processes, the simulator over HTTP, and moto's S3 server; for chaos tests, a dedicated
append-only Redis that can be killed and restarted, and a TCP proxy that can cut S3 off."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from PIL import Image

from seedq import keys
from seedq.store import JobStore, decoded
from simulator.config import SimConfig
from simulator.server import SimHandle, running_simulator
from worker.verify import verify_video

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-e2e-very-secret-key-0123456789"
AMQP_URL = os.environ.get("SEEDQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
SETTLED = frozenset({"delivered", "failed", "cancelled"})
# A task ends in one of: succeeded, raised (FAILURE), retry (RETRY; worker.tasks).
_TASK_LINE = re.compile(r"Task (seedq\.\w+)\[([0-9a-f-]+)\] (received|succeeded|raised|retry)")


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clip_rows(prefix: str, n: int, image: str = "images/red.png") -> list[dict[str, str]]:
    """``n`` manifest rows ``PREFIX-0..n-1`` of short 480p clips of one sample image."""
    return [
        {
            "id": f"{prefix}-{i}",
            "prompt": f"{prefix} clip {i}",
            "input_image": image,
            "duration": "4",
            "resolution": "480p",
        }
        for i in range(n)
    ]


def compose_flower_options() -> list[str]:
    """Flower's own options as docker-compose.yml gives them, but where it listens."""
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    argv: list[str] = compose["services"]["flower"]["command"]
    options = argv[argv.index("flower") + 1 :]
    return [a for a in options if not a.startswith(("--address", "--port"))]


@contextlib.contextmanager
def running_flower(env: dict[str, str], user: str, password: str, log: Path) -> Iterator[Any]:
    """Flower as docker-compose.yml starts it (its options, basic auth from
    FLOWER_BASIC_AUTH) on a free port; yields an httpx client of it without credentials
    (pass ``auth=``)."""
    import httpx

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "flower", "--address=127.0.0.1",
             f"--port={port}", *compose_flower_options()],
            env={**env, "FLOWER_BASIC_AUTH": f"{user}:{password}"},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            yield client
        finally:
            client.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def seedq_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``seedq ARGS`` as an operator runs it, to the end; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def seedq_background(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """``seedq ARGS`` left running, output and errors captured together as text (read
    them with communicate())."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(
    ready: Callable[[], bool],
    timeout_s: float,
    what: str,
    *,
    proc: subprocess.Popen[Any] | None = None,
    detail: Callable[[], str] | None = None,
    interval_s: float = 0.1,
) -> None:
    """Poll ``ready`` until it holds. Fails, naming ``what``, after ``timeout_s``, or at
    once with its output when ``proc``, the process that should make it hold, has
    exited; ``detail`` tells what a timeout should show besides."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc is not None and proc.poll() is not None:
            output = "\n".join(str(part) for part in proc.communicate() if part)
            pytest.fail(f"{what}: the process exited ({proc.returncode}) first\n{output}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s\n{detail() if detail else ''}")
        time.sleep(interval_s)


def kill(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc`` if it still runs, and reap it (its pipes read to the end): the
    clean-up of a test that is done with it, or failed before it was."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@dataclass
class Cluster:
    """Everything a test needs to run seedq as an operator would."""

    env: dict[str, str]
    sim: SimHandle
    store: redis.Redis
    bucket: str
    s3: Any
    folder: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def seedq(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return seedq_cli(*args, env=self.env, cwd=self.folder, timeout=timeout)

    def seedq_background(self, *args: str) -> subprocess.Popen[str]:
        return seedq_background(*args, env=self.env, cwd=self.folder)

    def start_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "-l",
                "INFO",
                "-P",
                "threads",
                "-c",
                "4",
                "-n",
                f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}@%h",
                "--without-mingle",
                "--without-gossip",
                *extra,
            ],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.folder.glob("worker-*.log"))
        )

    def holding(self, n: int) -> list[str]:
        """The tasks worker ``n`` has received and not finished, from its log (names)."""
        log = (self.folder / f"worker-{n}.log").read_text(errors="replace")
        open_tasks: dict[str, str] = {}
        for name, task_id, what in _TASK_LINE.findall(log):
            if what == "received":
                open_tasks[task_id] = name
            else:
                open_tasks.pop(task_id, None)
        return sorted(open_tasks.values())

    def jobs(self, job_ids: list[str]) -> dict[str, dict[str, str]]:
        """Each job's record (empty for a job the store does not know), read as the
        store reads it: a compacted one (worker.retention) has its long fields packed."""
        rows = JobStore(self.store).jobs(job_ids)
        return dict(zip(job_ids, rows, strict=True))

    def states(self, job_ids: list[str]) -> dict[str, str]:
        return {j: r.get("state", "?") for j, r in self.jobs(job_ids).items()}

    def wait_settled(self, job_ids: list[str], timeout_s: float) -> dict[str, dict[str, str]]:
        """Wait until every job is delivered, failed or cancelled; on timeout, fail with
        the jobs still moving and the tail of the workers' logs. A store that does not
        answer (being restarted) is waited for too."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                records = self.jobs(job_ids)
                if all(r.get("state") in SETTLED for r in records.values()):
                    return records
            if time.monotonic() > deadline:
                pytest.fail(
                    f"not settled within {timeout_s:.0f} s:\n{self.unsettled(job_ids)}\n"
                    f"simulator: {self.sim.stats()}\n{self.logs()[-6000:]}\n"
                    f"log lines of those jobs:\n{self.log_lines_of(job_ids)}"
                )
            time.sleep(0.25)

    def log_lines_of(self, job_ids: list[str], limit: int = 40) -> str:
        """The workers' last log lines naming a job not delivered yet."""
        with contextlib.suppress(redis.RedisError):
            job_ids = [j for j, s in self.states(job_ids).items() if s != "delivered"]
        names = re.compile("|".join(rf"\b{re.escape(j)}\b" for j in job_ids) or "$^")
        lines = [line for line in self.logs().splitlines() if names.search(line)]
        return "\n".join(lines[-limit:])

    def unsettled(self, job_ids: list[str]) -> str:
        """The jobs not delivered, each with its state and what went wrong last."""
        try:
            records = self.jobs(job_ids)
        except redis.RedisError as exc:
            return f"(store unreachable: {exc})"
        fields = ("state", "failed_step", "error", "last_error", "send_settled", "generation_id")
        return "\n".join(
            f"  {job_id}: "
            + ", ".join(f"{f}={r[f]!r}" for f in fields if r.get(f))
            + self._whereabouts(job_id, r.get("run_id", ""))
            for job_id, r in records.items()
            if r.get("state") != "delivered"
        )

    def _whereabouts(self, job_id: str, run_id: str) -> str:
        """Where a job stuck in a test is: its slot's and delivery's leases (seconds from
        now), its place in its run's queue, and which worker processes hold a message
        of it: what tells a lost message from a slow one."""
        try:
            now_s = float(self.store.time()[0])
            slot = self.store.zscore(keys.IN_FLIGHT, job_id)
            heard = self.store.zscore(keys.DELIVERING, job_id)
            waiting = self.store.zscore(keys.run_waiting(run_id), job_id) if run_id else None
            holders = [
                decoded(w)
                for w in self.store.smembers(keys.WORKERS)
                if any(
                    decoded(v).endswith(f"|{job_id}")
                    for v in self.store.hvals(keys.worker_held(decoded(w)))
                )
            ]
        except redis.RedisError:
            return ""
        parts = [
            f"slot lease {slot - now_s:+.0f} s" if slot is not None else "no slot",
            f"delivery heard of {heard - now_s:+.0f} s" if heard is not None else "",
            "waiting" if waiting is not None else "",
            f"held by {holders}" if holders else "held by no worker",
        ]
        return "; " + ", ".join(p for p in parts if p)

    def objects(self) -> dict[str, int]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="out/")
        return {o["Key"]: o["Size"] for o in listed.get("Contents", [])}

    def stop(self) -> None:
        """Kill the workers outright: the test is over and checks nothing of a shutdown,
        so a warm one (seconds per test) is not waited for. Waited for, each is gone
        before the test's database is flushed."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
        for proc in self.workers:
            proc.wait()


def write_manifest(folder: Path, rows: list[dict[str, str]]) -> Path:
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for name, colour in (
        ("red.png", (200, 40, 40)),
        ("blue.jpg", (40, 40, 200)),
        ("face-photo.png", (220, 180, 160)),
    ):
        Image.new("RGB", (320, 240), colour).save(images / name)
    fields = sorted({k for row in rows for k in row})
    lines = [",".join(fields)] + [",".join(row.get(f, "") for f in fields) for row in rows]
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest, real_redis_url: str) -> str:
    if request.param == "rabbitmq":
        if not listening("127.0.0.1", 5672):
            pytest.skip("no RabbitMQ on 127.0.0.1:5672")
        return AMQP_URL
    return real_redis_url


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def cluster(
    tmp_path: Path,
    real_redis: redis.Redis,
    real_redis_url: str,
    s3_server: str,
    s3_credentials: dict[str, str],
) -> Iterator[ClusterFactory]:
    made: list[Cluster] = []
    stack: list[Any] = []

    def make(
        broker: str | None = None,
        *,
        workers: int = 2,
        env: dict[str, str] | None = None,
        redis_url: str | None = None,
        **sim: Any,
    ) -> Cluster:
        """A cluster; ``env`` adds to (or overrides) the workers' and commands' environment;
        ``redis_url`` replaces the shared test Redis as broker and store."""
        store = real_redis
        if redis_url is None:
            redis_url = real_redis_url
        else:
            store = redis.Redis.from_url(redis_url)
        config = SimConfig(
            **{"latency_s": (0.3, 0.8), "max_concurrency": 8, "seed": 7, "keepalive_s": 1.0, **sim}
        )
        ctx = running_simulator(config)
        handle = ctx.__enter__()
        stack.append(ctx)
        bucket = f"seedq-e2e-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", endpoint_url=s3_server)
        s3.create_bucket(Bucket=bucket)
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SEEDQ_")},
            **s3_credentials,
            "SEEDQ_BROKER_URL": broker or redis_url,
            "SEEDQ_REDIS_URL": redis_url,
            "SEEDQ_PROVIDER_URL": handle.url,
            "OXEN_API_KEY": API_KEY,
            "SEEDQ_OUTPUT": f"s3://{bucket}/out",
            "SEEDQ_S3_ENDPOINT_URL": s3_server,
            "SEEDQ_POLL_INTERVAL_S": "0.3",
            "SEEDQ_ALLOW_PRIVATE_URLS": "true",
            "SEEDQ_RETRY_BASE_S": "0.2",
            "SEEDQ_RETRY_MAX_DELAY_S": "1",
            "SEEDQ_HTTP_TIMEOUT_S": "2",
            "SEEDQ_RECONCILE_GRACE_S": "3",
            "SEEDQ_BREAKER_COOLDOWN_S": "2",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        c = Cluster(environ, handle, store, bucket, s3, tmp_path)
        for _ in range(workers):
            c.start_worker()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@pytest.fixture
def manifest() -> Callable[[Path, list[dict[str, str]]], Path]:
    return write_manifest


@pytest.fixture
def no_config_env() -> dict[str, str]:
    """This process's environment without any seedq setting: what a new user has."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("SEEDQ_") and k != "OXEN_API_KEY"
    }


def assert_every_job_accounted(
    c: Cluster, job_ids: list[str], *, may_fail_at: frozenset[str] = frozenset()
) -> dict[str, dict[str, str]]:
    """What every chaos test checks at the end; returns the job records.

    Every job is delivered, or failed with a reason at a step in ``may_fail_at``; none is
    lost or left moving; the run counters agree with the jobs; no slot or delivery lease
    is left behind; the provider saw each job at most once (no duplicate enqueue, and one
    recorded generation per enqueue); every delivered job's video is in S3 once, with
    its sidecar, decodes and matches its request, and nothing else is there."""
    records = c.jobs(job_ids)
    lost = [j for j, r in records.items() if not r]
    assert not lost, f"jobs lost from the store: {lost}"
    states = {j: r["state"] for j, r in records.items()}
    odd = {j: s for j, s in states.items() if s not in ("delivered", "failed")}
    assert not odd, f"neither delivered nor failed: {odd}"
    for job_id, r in records.items():
        if r["state"] == "failed":
            assert r.get("error"), f"{job_id} failed without a reason: {r}"
            assert r.get("failed_step") in may_fail_at, f"{job_id} should not fail: {r}"

    by_run: dict[str, dict[str, int]] = {}
    for r in records.values():
        counted = by_run.setdefault(r["run_id"], {})
        counted[r["state"]] = counted.get(r["state"], 0) + 1
    for run_id, counted in by_run.items():
        raw: dict[bytes, bytes] = c.store.hgetall(keys.run_counts(run_id))  # type: ignore[assignment]
        counters = {k.decode(): int(v) for k, v in raw.items() if int(v)}
        assert counters == counted, f"run {run_id}: counters {counters}, jobs {counted}"
    assert c.store.zrange(keys.IN_FLIGHT, 0, -1) == [], "in-flight slots left behind"
    assert c.store.zrange(keys.DELIVERING, 0, -1) == [], "delivery leases left behind"

    stats = c.sim.stats()
    generations = [r["generation_id"] for r in records.values() if r.get("generation_id")]
    assert stats["duplicate_enqueues"] == 0, stats
    assert len(set(generations)) == len(generations), "two jobs share a generation"
    assert stats["enqueued"] == stats["generations"] == len(generations), (
        f"enqueued {stats['enqueued']}, generations {stats['generations']}, "
        f"jobs holding one {len(generations)}"
    )

    delivered = {j: r for j, r in records.items() if r["state"] == "delivered"}
    expected = {r["output_uri"].removeprefix(f"s3://{c.bucket}/"): j for j, r in delivered.items()}
    listed = c.s3.list_objects_v2(Bucket=c.bucket, Prefix="out/")
    assert not listed.get("IsTruncated")
    # Published inputs, and the run archives (worker.retention) beside the clips.
    keys_in_s3 = [
        o["Key"]
        for o in listed.get("Contents", [])
        if "/_inputs/" not in o["Key"] and "/_runs/" not in o["Key"]
    ]
    # An unplayable download is kept under quarantine/ by the failed job that names it.
    quarantined = {k for k in keys_in_s3 if k.startswith("out/quarantine/")}
    named = {r.get("quarantine_uri", "") for r in records.values() if r["state"] == "failed"}
    for key in quarantined:
        video = key.removesuffix(".json").removesuffix(".mp4") + ".mp4"
        assert f"s3://{c.bucket}/{video}" in named, f"{key}: kept, yet no failed job names it"
    stored = [k for k in keys_in_s3 if k not in quarantined]
    videos = sorted(k for k in stored if k.endswith(".mp4"))
    assert videos == sorted(expected), "the videos in S3 are not those of the delivered jobs"
    assert sorted(k for k in stored if not k.endswith(".mp4")) == sorted(
        k.removesuffix(".mp4") + ".json" for k in expected
    ), "a sidecar is missing or extra"
    with tempfile.TemporaryDirectory(prefix="seedq-chaos-") as folder:
        path = Path(folder) / "video.mp4"
        for key, job_id in expected.items():
            c.s3.download_file(c.bucket, key, str(path))
            info = verify_video(path, json.loads(delivered[job_id]["sent_params"]))
            assert info.size_bytes == int(delivered[job_id]["size_bytes"]), key
    return records


class RedisProcess:
    """A dedicated ``redis-server`` with an fsync'd append-only file, which a test may
    kill and start again on the same port and directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("no redis-server binary")
        self.proc = subprocess.Popen(
            [
                server,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)),
                *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
                *("--logfile", str(self.folder / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping():
                    break
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                assert self.proc.poll() is None, (self.folder / "redis.log").read_text()
            assert time.monotonic() < deadline, (self.folder / "redis.log").read_text()
            time.sleep(0.05)
        client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A started :class:`RedisProcess` of this test's own (never the shared Redis)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisProcess(folder)
    server.start()
    yield server
    server.stop(signal.SIGKILL)


class TcpProxy:
    """Forwards a loopback port to ``target``; :meth:`down` cuts every connection and
    refuses new ones (nothing listens) until :meth:`up`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                for sock in (client, upstream):
                    sock.settimeout(None)
                with self._lock:
                    self._conns.update((client, upstream))
                threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._conns.difference_update((client, upstream))
        client.close()
        upstream.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def s3_proxy(s3_server: str) -> Iterator[TcpProxy]:
    """A :class:`TcpProxy` in front of the S3 server, up."""
    host, port = s3_server.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    proxy.up()
    yield proxy
    proxy.down()

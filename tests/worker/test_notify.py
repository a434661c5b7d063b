"""Run notifications, the sending half (worker.notify, worker.timekeeper.RunWatch): each
event of a run is told once however many ticks or workers see it, an operator's pause
never, a budget pause once what fits has delivered; a webhook is retried with backoff
(never really sleeping here), refused by the fetch guard when it points inside, and
the secret never shows; and a real HTTP receiver gets a POST it can verify."""

from __future__ import annotations

import http.server
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import fakeredis
import httpx
import pytest
import redis

from producer.jobs import JobSpec
from provider.client import OxenClient
from provider.errors import RefusedUrl
from seedq import keys
from seedq.admission import Admission
from seedq.contract import JobState
from seedq.notify import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notice,
    NotifyEvent,
    verify,
)
from seedq.settings import Settings
from seedq.store import JobStore
from storage.local import LocalStorage
from worker.control import pause, resume
from worker.inputs import NoInputPublisher
from worker.notify import (
    LOOKBACK_S,
    Notifier,
    NotifyUrlRefused,
    claim_hold_s,
    guarded_post,
    notify_runs,
    post_with_retries,
    retry_after_s,
    run_notify_urls,
    wait_for_notice,
)
from worker.retry import RetryPolicy
from worker.runtime import Runtime, poll_throttle, submit_throttle
from worker.timekeeper import RunWatch

RUN = "run-n"
HOOK = "https://hooks.example.com/seedq"
SECRET = "whsec_never_shown_0123456789"
EST = 0.5


@dataclass
class FakeNotifier:
    """Takes notices as the real one does, and reports each one sent at once."""

    sent: list[tuple[Notice, list[str]]] = field(default_factory=list)

    def send(self, notice: Notice, urls: list[str], done: Callable[[bool], None]) -> None:
        self.sent.append((notice, urls))
        done(True)


@dataclass
class World:
    rt: Runtime
    store: JobStore
    admission: Admission

    def tell(self, notifier: FakeNotifier | Notifier) -> list[Notice]:
        return notify_runs(self.rt, cast(Notifier, notifier))

    def move(
        self, job_id: str, to: JobState, run_id: str = RUN, **fields: str | int | float
    ) -> None:
        before = JobState(self.store.job(job_id)["state"])
        assert self.store.move(job_id, run_id, to, expect=[before], **fields).ok

    def deliver(self, *job_ids: str, run_id: str = RUN) -> None:
        for job_id in job_ids:
            for to in (JobState.SUBMITTING, JobState.SUBMITTED, JobState.GENERATED):
                self.move(job_id, to, run_id)
            self.move(job_id, JobState.DELIVERED, run_id, cost=EST)  # as delivery records it


def world(
    tmp_path: Path,
    n: int = 2,
    *,
    notify: list[str] | None = None,
    budget: float | None = None,
    **settings_kw: object,
) -> World:
    client = fakeredis.FakeRedis()
    store = JobStore(client)
    settings = Settings(output=str(tmp_path / "out"), **settings_kw)  # type: ignore[arg-type]
    admission = Admission(store, max_in_flight=10, lease_s=300)
    rt = Runtime(
        settings=settings,
        store=store,
        provider=cast(OxenClient, None),
        storage=LocalStorage(tmp_path),
        publisher=NoInputPublisher(),
        policy=RetryPolicy(base_s=0.0, jitter=0.0),
        admission=admission,
        submit_throttle=submit_throttle(store, settings),
        poll_throttle=poll_throttle(store, settings),
    )
    w = World(rt, store, admission)
    add_run(w, RUN, n, notify=[HOOK] if notify is None else notify, budget=budget)
    return w


def add_run(
    w: World, run_id: str, n: int, *, notify: list[str], budget: float | None = None
) -> None:
    w.store.create_run(run_id, "nightly", {"notify": notify} if notify else {})
    specs = [
        JobSpec(
            f"{run_id}-j{i}", "m.csv", i + 2, "model", {"prompt": f"p{i}"}, "x.mp4", est_cost=EST
        )
        for i in range(n)
    ]
    for _ in w.store.register(run_id, [(s.id, s.fingerprint, s.to_record()) for s in specs]):
        pass
    if budget is not None:
        w.admission.budgets.set_cap(run_id, budget)
    w.store.set_run_status(run_id, "active")


def jobs(run_id: str, *idx: int) -> list[str]:
    return [f"{run_id}-j{i}" for i in idx]


# -- which events are told, and how often ------------------------------------------------


def test_a_finished_run_is_told_once_however_many_workers_tick(tmp_path: Path) -> None:
    w = world(tmp_path)
    first, second = FakeNotifier(), FakeNotifier()
    assert w.tell(first) == []  # active, nothing ended
    w.deliver(*jobs(RUN, 0))
    assert w.tell(first) == []
    w.deliver(*jobs(RUN, 1))

    told = w.tell(first)
    assert [(n.event, n.run_id) for n in told] == [(NotifyEvent.FINISHED, RUN)]
    assert first.sent[0][1] == [HOOK]
    assert w.tell(second) == [] and w.tell(first) == []  # another worker, the next tick
    watch = RunWatch(w.store.redis)
    assert watch.outcome(RUN, "finished") == "sent"
    # Even seen again (watched anew), the claim holds: told once.
    w.store.redis.sadd(keys.NOTIFY_WATCH, RUN)
    assert w.tell(second) == [] and not second.sent
    assert not w.store.redis.sismember(keys.NOTIFY_WATCH, RUN)  # finished: forgotten


def test_the_notice_carries_counts_spend_and_wall_time(tmp_path: Path) -> None:
    w = world(tmp_path, 2)
    assert len(w.admission.admit()) == 2  # each reserves its estimate
    w.deliver(*jobs(RUN, 0))
    w.move(jobs(RUN, 1)[0], JobState.FAILED)
    later = time.time() + 125
    w.rt.clock = lambda: later
    notice = w.tell(FakeNotifier())[0]
    assert notice.counts == {"delivered": 1, "failed": 1}
    assert notice.total == 2 and notice.run_name == "nightly"
    assert notice.wall_time_s == pytest.approx(125, abs=2)
    assert notice.spend.estimated == pytest.approx(EST)  # the one generation that succeeded
    assert notice.output == str((tmp_path / "out").resolve())
    assert notice.report_command == f"seedq report {RUN} --format html"


def test_a_budget_pause_is_told_once_what_fits_has_delivered(tmp_path: Path) -> None:
    w = world(tmp_path, 4, budget=1.0)
    notifier = FakeNotifier()
    admitted = [a.job_id for a in w.admission.admit()]
    assert len(admitted) == 2 and w.store.run_status(RUN) == "paused"
    assert w.tell(notifier) == []  # two admitted jobs still to deliver
    w.deliver(*admitted[:1])
    assert w.tell(notifier) == []
    w.deliver(*admitted[1:])

    assert [n.event for n in w.tell(notifier)] == [NotifyEvent.BUDGET_REACHED]
    assert w.tell(notifier) == []
    assert notifier.sent[0][0].spend.budget.cap == 1.0

    # More budget: the rest run, and the run's end is told too.
    resume(w.store, w.admission, lambda *a, **k: None, RUN, budget=2.0)
    rest = [j for j in jobs(RUN, 0, 1, 2, 3) if j not in admitted]
    w.deliver(*rest)
    assert [n.event for n in w.tell(notifier)] == [NotifyEvent.FINISHED]


def test_an_operators_pause_is_not_told_a_fatal_one_is_once(tmp_path: Path) -> None:
    w = world(tmp_path)
    notifier = FakeNotifier()
    pause(w.store, RUN)
    assert w.tell(notifier) == []
    w.store.pause_run(RUN, "provider rejected the API key (401)")
    told = w.tell(notifier)
    assert [(n.event, n.reason) for n in told] == [
        (NotifyEvent.PAUSED, "provider rejected the API key (401)")
    ]
    assert w.tell(notifier) == []
    assert w.store.redis.sismember(keys.NOTIFY_WATCH, RUN)  # still watched: it may finish


def test_runs_with_no_webhook_are_not_told_and_leave_the_watch(tmp_path: Path) -> None:
    w = world(tmp_path, 1, notify=[])
    w.deliver(*jobs(RUN, 0))
    assert w.tell(FakeNotifier()) == []
    assert RunWatch(w.store.redis).outcome(RUN, "finished") is None
    assert not w.store.redis.sismember(keys.NOTIFY_WATCH, RUN)


def test_the_workers_webhook_covers_every_run(tmp_path: Path) -> None:
    w = world(tmp_path, 1, notify=[], notify_url="https://ops.example.com/h")
    add_run(w, "run-2", 1, notify=["https://team.example.com/h"])
    w.deliver(*jobs(RUN, 0))
    w.deliver(*jobs("run-2", 0), run_id="run-2")
    notifier = FakeNotifier()
    w.tell(notifier)
    urls = {n.run_id: u for n, u in notifier.sent}
    assert urls == {
        RUN: ["https://ops.example.com/h"],
        "run-2": ["https://team.example.com/h", "https://ops.example.com/h"],
    }


def test_the_first_scan_of_a_redis_looks_back_an_hour_only(tmp_path: Path) -> None:
    w = world(tmp_path, 1)
    w.deliver(*jobs(RUN, 0))
    # Created (and finished) long before any worker watched: not told.
    w.store.redis.zadd(keys.RUNS, {RUN: time.time() - LOOKBACK_S - 60})
    assert w.tell(FakeNotifier()) == []
    add_run(w, "run-new", 1, notify=[HOOK])  # created after the first scan: watched
    w.deliver(*jobs("run-new", 0), run_id="run-new")
    assert [n.run_id for n in w.tell(FakeNotifier())] == ["run-new"]


def test_a_pruned_run_leaves_the_watch(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.tell(FakeNotifier())
    assert w.store.redis.sismember(keys.NOTIFY_WATCH, RUN)
    w.store.redis.delete(keys.run(RUN))
    assert w.tell(FakeNotifier()) == []
    assert not w.store.redis.sismember(keys.NOTIFY_WATCH, RUN)


# -- sending: retries, the guard, the secret ---------------------------------------------


@dataclass
class Answers:
    """A webhook answering these status codes (with a Retry-After when a pair; an
    exception: no answer), in turn."""

    answers: list[int | tuple[int, float] | Exception]
    calls: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float | None]:
        self.calls.append(headers)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, tuple) else (answer, None)


def counting_headers() -> Callable[[], dict[str, str]]:
    n = [0]

    def headers() -> dict[str, str]:
        n[0] += 1
        return {TIMESTAMP_HEADER: str(n[0])}

    return headers


def test_a_failing_webhook_is_retried_with_growing_delays_without_sleeping() -> None:
    slept: list[float] = []
    post = Answers([503, httpx.ConnectError("refused"), 200])
    done = post_with_retries(
        post, HOOK, b"{}", counting_headers(), max_attempts=5, sleep=slept.append, rand=lambda: 0.0
    )
    assert done.ok and done.attempts == 3
    assert slept == [1.0, 2.0]  # half of 2 s, then of 4 s (rand 0: the shortest)
    assert [h[TIMESTAMP_HEADER] for h in post.calls] == ["1", "2", "3"]  # signed anew


def test_a_retry_after_from_the_webhook_is_waited_out() -> None:
    slept: list[float] = []
    post = Answers([(429, 42.0), 204])
    done = post_with_retries(
        post, HOOK, b"{}", counting_headers(), max_attempts=3, sleep=slept.append, rand=lambda: 0.0
    )
    assert done.ok and slept == [42.0]


@pytest.mark.parametrize(
    ("header", "seconds"), [(None, None), ("30", 30.0), ("Wed, 21 Oct 2026 07:28:00 GMT", None)]
)
def test_retry_after_is_read_in_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_s(header) == seconds


def test_retries_stop_at_the_attempts_limit_with_the_last_error() -> None:
    slept: list[float] = []
    post = Answers([500] * 4)
    done = post_with_retries(
        post, HOOK, b"{}", counting_headers(), max_attempts=4, sleep=slept.append, rand=lambda: 0.5
    )
    assert (done.ok, done.attempts, done.error) == (False, 4, "HTTP 500")
    assert len(slept) == 3 and slept == sorted(slept)


@pytest.mark.parametrize("answer", [404, RefusedUrl("refused URL: private address")])
def test_a_refusal_is_not_retried(answer: int | Exception) -> None:
    slept: list[float] = []
    done = post_with_retries(
        Answers([answer]), HOOK, b"{}", counting_headers(), max_attempts=5, sleep=slept.append
    )
    assert not done.ok and done.attempts == 1 and slept == []


def test_the_fetch_guard_refuses_a_webhook_inside_the_network() -> None:
    post = guarded_post(allow_private=False, timeout_s=2.0)
    for url in ("http://127.0.0.1:9/hook", "https://10.0.0.8/hook", "https://user:pw@x.example/h"):
        with pytest.raises(RefusedUrl):
            post(url, b"{}", {})
    settings = Settings()
    with pytest.raises(NotifyUrlRefused, match=re.escape("notify URL http://127.0.0.1:9/…")):
        run_notify_urls(["http://127.0.0.1:9/hook?token=abc"], settings, allow_private=False)
    assert run_notify_urls(["http://127.0.0.1:9/h"], settings, allow_private=True) == [
        "http://127.0.0.1:9/h"
    ]


def test_the_secret_and_the_webhooks_query_never_show(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = world(tmp_path, 1, notify=["https://hooks.example.com/T0/B0/pathtoken?token=qtoken"])
    w.deliver(*jobs(RUN, 0))
    seen: list[tuple[bytes, dict[str, str]]] = []

    def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float | None]:
        seen.append((body, headers))
        if len(seen) == 2:  # the last error, the one logged, names the URL
            raise httpx.ConnectError(f"cannot reach {url}")
        return 500, None

    notifier = Notifier(secret=SECRET, max_attempts=2, post=post, sleep=lambda s: None)
    with caplog.at_level(logging.DEBUG):
        w.tell(notifier)
        notifier.join()
    body, headers = seen[0]
    assert SECRET.encode() not in body and SECRET not in json.dumps(headers)
    assert "qtoken" not in caplog.text and "pathtoken" not in caplog.text
    assert SECRET not in caplog.text
    assert "https://hooks.example.com/…" in caplog.text
    assert RunWatch(w.store.redis).outcome(RUN, "finished") == "failed"


# -- a real receiver ---------------------------------------------------------------------


@dataclass
class Received:
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in turn, then 204


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    got = Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.requests.append((dict(self.headers.items()), body))
            self.send_response(got.statuses.pop(0) if got.statuses else 204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/seedq", got
    finally:
        server.shutdown()
        server.server_close()


def test_a_real_receiver_gets_one_signed_post_when_a_run_finishes(
    tmp_path: Path, receiver: tuple[str, Received], caplog: pytest.LogCaptureFixture
) -> None:
    url, got = receiver
    got.statuses = [502]  # the first try fails: retried
    w = world(tmp_path, 2, notify=[url], allow_private_urls=True, notify_secret=SECRET)
    notifier = Notifier(
        secret=SECRET,
        max_attempts=3,
        post=guarded_post(allow_private=True, timeout_s=5.0),
        sleep=lambda s: None,
    )
    w.tell(notifier)
    w.deliver(*jobs(RUN, 0, 1))
    with caplog.at_level(logging.DEBUG):
        w.tell(notifier)
        w.tell(notifier)
        notifier.join()
    assert "/hooks/seedq" not in caplog.text  # not even httpx's own request log
    assert "run.finished told to http://127.0.0.1:" in caplog.text

    assert len(got.requests) == 2  # one notification: a failed try, then its retry
    headers, body = got.requests[-1]
    assert verify(
        SECRET,
        body,
        timestamp=headers[TIMESTAMP_HEADER],
        signature_header=headers[SIGNATURE_HEADER],
        now=time.time(),
    )
    assert headers[DELIVERY_HEADER] == f"{RUN}:finished"
    sent = json.loads(body)
    assert sent["event"] == "run.finished" and sent["run"]["id"] == RUN
    assert sent["counts"] == {"delivered": 2}
    assert "finished: 2 delivered of 2" in sent["text"]
    assert RunWatch(w.store.redis).outcome(RUN, "finished") == "sent"
    assert wait_for_notice(w.store, RUN, [url], None, timeout_s=0.0) == "sent"


# -- a sender that died ------------------------------------------------------------------


def test_a_claim_left_by_a_dead_sender_is_taken_over_once_after_its_hold(
    client: redis.Redis,
) -> None:
    watch = RunWatch(client)
    assert watch.claim(RUN, "finished", now_s=1000.0, hold_s=60.0)
    assert watch.outcome(RUN, "finished") == "sending"
    assert not watch.claim(RUN, "finished", now_s=1059.0, hold_s=60.0)  # still held
    assert watch.claim(RUN, "finished", now_s=1061.0, hold_s=60.0)  # its sender died
    assert not watch.claim(RUN, "finished", now_s=1062.0, hold_s=60.0)  # taken over once
    assert client.ttl(keys.run_notified(RUN, "finished")) > keys.NOTIFIED_TTL_S - 100
    watch.settle(RUN, "finished", "sent")
    assert not watch.claim(RUN, "finished", now_s=9999.0, hold_s=60.0)  # told: never again
    watch.claim(RUN, "paused:x", now_s=0.0, hold_s=1.0)
    watch.settle(RUN, "paused:x", "failed")
    assert not watch.claim(RUN, "paused:x", now_s=9999.0, hold_s=1.0)  # given up: stays


@dataclass
class DeadNotifier:
    """Takes notices and never reports them: its worker was killed."""

    sent: list[Notice] = field(default_factory=list)

    def send(self, notice: Notice, urls: list[str], done: Callable[[bool], None]) -> None:
        self.sent.append(notice)


def test_an_event_whose_sender_died_is_sent_by_a_later_tick(tmp_path: Path) -> None:
    w = world(tmp_path, 1)
    w.deliver(*jobs(RUN, 0))
    now = [time.time()]
    w.rt.clock = lambda: now[0]
    dead = DeadNotifier()
    assert [n.event for n in notify_runs(w.rt, cast(Notifier, dead))] == [NotifyEvent.FINISHED]
    w.store.redis.sadd(keys.NOTIFY_WATCH, RUN)  # as if the finished run were still watched
    alive = FakeNotifier()
    assert w.tell(alive) == []  # held by the dead sender for now
    now[0] += claim_hold_s(w.rt.settings) + 1
    w.store.redis.sadd(keys.NOTIFY_WATCH, RUN)
    assert [n.event for n in w.tell(alive)] == [NotifyEvent.FINISHED]
    assert RunWatch(w.store.redis).outcome(RUN, "finished") == "sent"


def test_a_claim_outlasts_every_retry_of_every_webhook() -> None:
    settings = Settings()  # 8 attempts, 10 s timeouts
    delays = 2 + 4 + 8 + 16 + 32 + 64 + 128
    assert claim_hold_s(settings) == 8 * 2 * 10 + delays + 120
    assert claim_hold_s(settings, 2) == 2 * (8 * 2 * 10 + delays) + 120

"""Run notifications, the sending half: the tick finds the runs at an event
(:func:`notify_runs`, reading through ``worker.timekeeper.RunWatch``), claims each event
once, and hands it to this process's :class:`Notifier`, a background thread that POSTs
the signed JSON (``seedq.notify``) to every webhook of the run, with retries and
backoff. Nothing here runs inside a job step, and the tick only enqueues: a slow or
dead webhook never holds the pipeline up.

Every POST goes through the fetch guard (``provider.guard``): https only, no
credentials in the URL, no private or loopback address unless
``SEEDQ_ALLOW_PRIVATE_URLS``; redirects are not followed. Logs name a webhook by its
scheme and host only (``seedq.notify.shown_url``); the signing secret is in no log, no
payload and no task message (there is no task: the thread has it from the settings).

What a crash costs: an event claimed by a worker that dies before its POST succeeds is
sent by another worker's tick once the claim's hold (:func:`claim_hold_s`, minutes)
has passed. Only a sender slower than its hold makes an event go twice, with the same
``X-Seedq-Delivery`` id.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from provider.errors import RefusedUrl
from provider.guard import GuardedTransport, check_url
from seedq.backoff import compute_backoff
from seedq.budget import Budgets
from seedq.errors import SeedqError
from seedq.notify import (
    Notice,
    NotifyEvent,
    Spend,
    decide_event,
    event_key,
    notify_targets,
    payload,
    retry_delay_s,
    retryable_status,
    shown_url,
    signed_headers,
)
from seedq.settings import Settings
from seedq.store import JobStore
from worker.control import OPERATOR_PAUSE
from worker.runtime import Runtime
from worker.timekeeper import RunWatch, WatchedRun

log = logging.getLogger(__name__)

LOOKBACK_S = 3600.0  # the first scan of a Redis watches the runs of the last hour
QUIET_REASONS = (OPERATOR_PAUSE,)
RETRY_BASE_S = 2.0
RETRY_MAX_S = 300.0
CLAIM_MARGIN_S = 120.0
SENT, FAILED = "sent", "failed"

# (url, body, headers) -> the receiver's status code and the seconds of its Retry-After
# (None when it sent none); raises on no answer.
Post = Callable[[str, bytes, dict[str, str]], tuple[int, float | None]]


class NotifyUrlRefused(SeedqError):
    """A webhook URL the fetch guard's rules refuse (bad input: nothing is submitted)."""


def run_notify_urls(given: Iterable[str], settings: Settings, *, allow_private: bool) -> list[str]:
    """The webhooks to store with a new run: ``--notify`` ones, then this side's
    ``SEEDQ_NOTIFY_URL``. Their form is checked now, by the fetch guard's rules; their
    address is checked again at every POST (a name may resolve elsewhere by then)."""
    urls = notify_targets(given, settings.notify_url)
    for url in urls:
        try:
            check_url(url, allow_private=allow_private)
        except RefusedUrl as exc:
            raise NotifyUrlRefused(f"notify URL {shown_url(url)}: {exc}") from None
    return urls


@dataclass(frozen=True, slots=True)
class Attempted:
    """How one webhook's delivery ended."""

    ok: bool
    attempts: int
    error: str = ""


def post_with_retries(
    post: Post,
    url: str,
    body: bytes,
    headers: Callable[[], dict[str, str]],
    *,
    max_attempts: int,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
    base_s: float = RETRY_BASE_S,
    max_s: float = RETRY_MAX_S,
) -> Attempted:
    """POST ``body`` until a 2xx, a refusal that retrying cannot change (a 4xx, a URL
    the guard refuses), or ``max_attempts``; headers are made per attempt, so each
    carries a fresh signed timestamp."""
    error = ""
    for attempt in range(1, max_attempts + 1):
        retry_after: float | None = None
        try:
            status, retry_after = post(url, body, headers())
        except RefusedUrl as exc:
            return Attempted(False, attempt, _without_url(str(exc), url))
        except (httpx.HTTPError, SeedqError, OSError) as exc:
            error = _without_url(f"{type(exc).__name__}: {exc}", url)
        else:
            if 200 <= status < 300:
                return Attempted(True, attempt)
            error = f"HTTP {status}"
            if not retryable_status(status):
                return Attempted(False, attempt, error)
        if attempt < max_attempts:
            delay = retry_delay_s(
                attempt, base_s=base_s, max_s=max_s, rand=rand(), retry_after_s=retry_after
            )
            sleep(delay)
    return Attempted(False, max_attempts, error)


def _without_url(message: str, url: str) -> str:
    """An error message fit for the log: the webhook's path and query taken out."""
    return message.replace(url, shown_url(url))


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds; None when absent or a date (then the backoff's
    own delay is used)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def guarded_post(*, allow_private: bool, timeout_s: float) -> Post:
    """POSTs through the fetch guard's transport, one connection per call (notifications
    are rare). Straight to the transport, not through an ``httpx.Client``: the client
    logs every request's full URL, and a webhook's path and query are its credential.
    No redirect is followed (a redirected POST would be a second, unchecked request)."""
    timeout = httpx.Timeout(timeout_s).as_dict()

    def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float | None]:
        request = httpx.Request(
            "POST", url, content=body, headers=headers, extensions={"timeout": timeout}
        )
        with GuardedTransport(allow_private=allow_private) as transport:
            answer = transport.handle_request(request)
            try:
                answer.read()
            finally:
                answer.close()
            return answer.status_code, retry_after_s(answer.headers.get("Retry-After"))

    return post


def claim_hold_s(settings: Settings, webhooks: int = 1) -> float:
    """How long a claim is held before another worker may take it over: longer than
    every attempt to each webhook timing out, and every delay at its longest, with a
    margin."""
    attempts = settings.notify_max_attempts
    delays = sum(
        compute_backoff(n, base_s=RETRY_BASE_S, max_s=RETRY_MAX_S, jitter=0.0, rand=0.0)
        for n in range(1, attempts)
    )
    per_webhook = attempts * 2 * settings.notify_timeout_s + delays
    return max(1, webhooks) * per_webhook + CLAIM_MARGIN_S


class Notifier:
    """Sends each notice in a thread of its own (a few a night: no queue behind a slow
    webhook, so a claim's hold bounds its sending); :meth:`send` returns at once."""

    def __init__(
        self,
        *,
        secret: str | None,
        max_attempts: int,
        post: Post,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._max_attempts = max_attempts
        self._post = post
        self._sleep = sleep
        self._clock = clock
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def send(self, notice: Notice, urls: list[str], done: Callable[[bool], None]) -> None:
        """Send ``notice`` to ``urls`` in a new thread; ``done(every webhook took it)``
        is called there at the end."""
        thread = threading.Thread(
            target=self._run, args=(notice, urls, done), name="seedq-notify", daemon=True
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def deliver(self, notice: Notice, urls: list[str]) -> bool:
        """POST the notice to each webhook; True when every one took it."""
        body = json.dumps(payload(notice), sort_keys=True).encode()

        def headers() -> dict[str, str]:
            return signed_headers(
                body,
                secret=self._secret,
                timestamp=int(self._clock()),
                event=notice.event.value,
                delivery_id=notice.delivery_id,
            )

        ok = True
        for url in urls:
            done = post_with_retries(
                self._post, url, body, headers, max_attempts=self._max_attempts, sleep=self._sleep
            )
            if done.ok:
                log.info("run %s: %s told to %s", notice.run_id, notice.event, shown_url(url))
            else:
                ok = False
                log.warning(
                    "run %s: %s not told to %s after %d attempt(s): %s",
                    notice.run_id,
                    notice.event,
                    shown_url(url),
                    done.attempts,
                    done.error,
                )
        return ok

    def _run(self, notice: Notice, urls: list[str], done: Callable[[bool], None]) -> None:
        try:
            done(self.deliver(notice, urls))
        except Exception:  # logged: a thread's exception would go to stderr only
            log.exception("run %s: notification failed", notice.run_id)

    def join(self) -> None:
        """Wait until every notice sent so far was delivered or given up (tests)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()


_notifiers: dict[tuple[str | None, int, bool, float], Notifier] = {}
_notifiers_lock = threading.Lock()


def notifier_for(settings: Settings) -> Notifier:
    """This process's notifier for these settings, made on first use."""
    secret = settings.notify_secret_value()
    allow, timeout_s = settings.allow_private_urls, settings.notify_timeout_s
    index = (secret, settings.notify_max_attempts, allow, timeout_s)
    with _notifiers_lock:
        if index not in _notifiers:
            _notifiers[index] = Notifier(
                secret=secret,
                max_attempts=settings.notify_max_attempts,
                post=guarded_post(allow_private=allow, timeout_s=timeout_s),
            )
        return _notifiers[index]


def build_notice(
    store: JobStore,
    budgets: Budgets,
    settings: Settings,
    run: WatchedRun,
    event: NotifyEvent,
    now_s: float,
) -> Notice:
    """Everything the event's payload says, read now."""
    state = run.state
    money = store.billing.run(state.run_id)
    budget = budgets.state(state.run_id)
    output = settings.output if settings.output_is_s3 else str(Path(settings.output).resolve())
    return Notice(
        event=event,
        key=event_key(event, state.reason),
        run_id=state.run_id,
        run_name=run.name,
        status=state.status,
        reason=state.reason,
        counts={k: v for k, v in state.counts.items() if v},
        total=state.total,
        wall_time_s=max(0.0, now_s - run.created_at),
        spend=Spend(money.estimated, money.billed, money.pending_jobs, budget),
        output=output,
        report_command=f"seedq report {state.run_id} --format html",
    )


def run_urls(run: WatchedRun) -> list[str]:
    urls = run.meta.get("notify") or []
    return [str(u) for u in urls] if isinstance(urls, list) else []


def notify_runs(rt: Runtime, notifier: Notifier | None = None) -> list[Notice]:
    """The tick's part: announce each watched run's new event, once; returns what was
    handed to the notifier. A run leaves the watch once it has finished."""
    watch = RunWatch(rt.store.redis)
    now = rt.now()
    told = []
    for run in watch.scan(now, lookback_s=LOOKBACK_S):
        event = decide_event(run.state, quiet_reasons=QUIET_REASONS)
        urls = notify_targets(run_urls(run), rt.settings.notify_url)
        # Claimed before anything else is read: a run resting at its event costs one
        # SET NX per tick.
        if (
            event is not None
            and urls
            and watch.claim(
                run.state.run_id,
                event_key(event, run.state.reason),
                now_s=now,
                hold_s=claim_hold_s(rt.settings, len(urls)),
            )
        ):
            notice = build_notice(rt.store, rt.admission.budgets, rt.settings, run, event, now)
            sender = notifier or notifier_for(rt.settings)
            sender.send(notice, urls, _settle(watch, notice))
            told.append(notice)
        if event is NotifyEvent.FINISHED:
            watch.forget(run.state.run_id)
    return told


def _settle(watch: RunWatch, notice: Notice) -> Callable[[bool], None]:
    def done(ok: bool) -> None:
        watch.settle(notice.run_id, notice.key, SENT if ok else FAILED)

    return done


def wait_for_notice(
    store: JobStore,
    run_id: str,
    run_urls_: Iterable[str],
    configured: str | None,
    *,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """For ``seedq run`` in embedded mode, whose notifier dies with it: wait until the
    run's current event (if it is at one and has webhooks) was sent or given up.
    Returns ``sent``, ``failed``, ``sending`` (still trying at the timeout), ``""``
    (not claimed yet at the timeout), or None when there is nothing to announce."""
    if not notify_targets(run_urls_, configured):
        return None
    watch = RunWatch(store.redis)
    deadline = clock() + timeout_s
    while True:
        found = watch.read([run_id])[0]
        event = decide_event(found.state, quiet_reasons=QUIET_REASONS) if found else None
        if found is None or event is None:
            return None
        outcome = watch.outcome(run_id, event_key(event, found.state.reason))
        if outcome in (SENT, FAILED) or clock() >= deadline:
            return outcome or ""
        sleep(0.2)


def notify_from_tick(rt: Runtime) -> None:
    """:func:`notify_runs` for the tick, which it must never fail: a broken read or
    webhook is logged, and admission, re-drives and sweeps go on."""
    try:
        notify_runs(rt)
    except Exception:
        log.exception("run notifications failed this tick")

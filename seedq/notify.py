"""Run notifications, the pure half: which event a run is at, the JSON it is announced
with, how that body is signed, and how long to wait before trying a webhook again.

Three events are announced, each once (``worker.notify`` claims it in Redis before
sending): a run *finished* (every job delivered, failed or cancelled), a run *paused*
by a fatal error (a rejected key, no credits), and a run that *reached its budget*
(announced once the jobs admitted before the pause have delivered, so the counts say
what the money bought). An operator's pause and a submission window's are not events.

Signing follows Stripe's and GitHub's webhooks: ``X-Seedq-Signature: sha256=<hex>`` is
the HMAC-SHA256, keyed with ``SEEDQ_NOTIFY_SECRET``, of ``"<timestamp>." + raw body``,
and ``X-Seedq-Timestamp`` carries that timestamp (Unix seconds). A receiver recomputes
it over the bytes it got and refuses a timestamp older than a few minutes, so a
captured request cannot be replayed later (:func:`verify`). The secret is never in the
body, a header or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from seedq.backoff import compute_backoff, honour_retry_after
from seedq.budget import BudgetState, paused_by_budget
from seedq.contract import TERMINAL_STATES, RunStatus

SIGNATURE_HEADER = "X-Seedq-Signature"
TIMESTAMP_HEADER = "X-Seedq-Timestamp"
EVENT_HEADER = "X-Seedq-Event"
DELIVERY_HEADER = "X-Seedq-Delivery"  # the event's id: the same on every retry, for dedup
SIGNATURE_PREFIX = "sha256="
REPLAY_TOLERANCE_S = 300.0  # what verify() accepts by default, either side of now
# Pause reasons that are set on purpose, never by a failure: not announced. (The
# operator's is worker.control.OPERATOR_PAUSE; a window's pause has ``paused_by``.)
PAUSED_BY_WINDOW = "window"
IN_FLIGHT_STATES = ("submitting", "submitted", "retrying", "generated")


class NotifyEvent(StrEnum):
    """What happened to a run; the ``event`` field of the payload."""

    FINISHED = "run.finished"
    PAUSED = "run.paused"  # by a fatal error
    BUDGET_REACHED = "run.budget_reached"


@dataclass(frozen=True, slots=True)
class RunState:
    """What the tick read of a run, enough to decide its event."""

    run_id: str
    status: str
    reason: str = ""
    paused_by: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)
    total: int = 0
    holding: int = 0  # its jobs holding an in-flight slot (admitted, or at the provider)

    @property
    def going(self) -> int:
        """Jobs it started that are not over: at the provider, delivering, or admitted."""
        return sum(self.counts.get(s, 0) for s in IN_FLIGHT_STATES) + self.holding


def run_finished(status: str, counts: Mapping[str, int], total: int) -> bool:
    """Every job of the run ended (delivered, failed or cancelled), and no more will be
    registered: the one answer to "has this run finished?" for the tick's time step
    (``worker.timekeeper.finished``) and for its notification."""
    if status in (RunStatus.SCHEDULED, RunStatus.REGISTERING) or total == 0:
        return False
    return sum(counts.get(str(s), 0) for s in TERMINAL_STATES) >= total


def decide_event(run: RunState, *, quiet_reasons: Iterable[str] = ()) -> NotifyEvent | None:
    """The event the run is at now, if any. ``quiet_reasons`` are pause reasons set on
    purpose (an operator's), which are not announced."""
    if run_finished(run.status, run.counts, run.total):
        return NotifyEvent.FINISHED
    if run.status != RunStatus.PAUSED:
        return None
    if paused_by_budget(run.status, run.reason):
        # Only once what fits inside the cap has delivered: then the run rests.
        return NotifyEvent.BUDGET_REACHED if run.going == 0 else None
    if run.paused_by == PAUSED_BY_WINDOW or run.reason in set(quiet_reasons):
        return None
    return NotifyEvent.PAUSED


def event_key(event: NotifyEvent, reason: str) -> str:
    """Names one occurrence of an event, for its exactly-once marker: a run finishes
    once; a pause is told again only for a new reason (a budget pause's reason names
    the cap, so a raised cap reached again is a new event)."""
    if event is NotifyEvent.FINISHED:
        return "finished"
    digest = hashlib.sha256(reason.encode()).hexdigest()[:16]
    return f"{event.value.removeprefix('run.')}:{digest}"


def notify_targets(run_urls: Iterable[str], configured: str | None) -> list[str]:
    """Where a run's events go: the URLs stored with it (``--notify``, and the submitter's
    ``SEEDQ_NOTIFY_URL``), then this worker's ``SEEDQ_NOTIFY_URL``; each once."""
    urls = [u.strip() for u in [*run_urls, configured or ""] if u and u.strip()]
    return list(dict.fromkeys(urls))


def shown_url(url: str) -> str:
    """A webhook URL as logs show it: scheme and host only. A query string often holds
    a token, and a Slack-style path is itself the credential."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


# -- the payload -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spend:
    """A run's money when it is announced, in the pricing's currency."""

    estimated: float = 0.0  # seedq's estimate of the clips the provider made
    billed: float = 0.0  # the provider's bills known so far
    bills_pending: int = 0
    budget: BudgetState = field(default_factory=BudgetState)


@dataclass(frozen=True, slots=True)
class Notice:
    """One event of one run, with everything its payload says."""

    event: NotifyEvent
    key: str  # event_key(): the marker's name and, with the run id, the delivery id
    run_id: str
    run_name: str
    status: str
    reason: str
    counts: Mapping[str, int]
    total: int
    wall_time_s: float
    spend: Spend
    output: str  # where the videos (and the run's report, once archived) are
    report_command: str

    @property
    def delivery_id(self) -> str:
        return f"{self.run_id}:{self.key}"


def payload(notice: Notice) -> dict[str, Any]:
    """The JSON body: machine-readable fields, and ``text`` for Slack-compatible hooks."""
    budget = notice.spend.budget
    return {
        "event": notice.event.value,
        "id": notice.delivery_id,
        "run": {
            "id": notice.run_id,
            "name": notice.run_name,
            "status": notice.status,
            "reason": notice.reason,
            "total": notice.total,
        },
        "counts": {k: v for k, v in sorted(notice.counts.items()) if v},
        "spend": {
            "estimated": round(notice.spend.estimated, 6),
            "billed": round(notice.spend.billed, 6),
            "bills_pending": notice.spend.bills_pending,
            "budget": None
            if budget.cap is None
            else {
                "cap": budget.cap,
                "spent": round(budget.spent, 6),
                "reserved": round(budget.reserved, 6),
            },
        },
        "wall_time_s": round(notice.wall_time_s, 1),
        "report": {"output": notice.output, "command": notice.report_command},
        "text": slack_text(notice),
    }


def slack_text(notice: Notice) -> str:
    """One or two lines a person reads in a chat channel."""
    what = {
        NotifyEvent.FINISHED: "finished",
        NotifyEvent.PAUSED: "is paused by an error",
        NotifyEvent.BUDGET_REACHED: "reached its budget",
    }[notice.event]
    counts = ", ".join(f"{v} {k}" for k, v in sorted(notice.counts.items()) if v) or "no jobs"
    line = (
        f"seedq run *{notice.run_name}* (`{notice.run_id}`) {what}: {counts} "
        f"of {notice.total} in {duration_text(notice.wall_time_s)}; "
        f"estimated {notice.spend.estimated:.2f}"
    )
    budget = notice.spend.budget
    if budget.cap is not None:
        line += f", {budget.spent:.2f} of a {budget.cap:.2f} budget spent"
    if notice.event is not NotifyEvent.FINISHED and notice.reason:
        line += f"\n> {notice.reason}"
    return line + f"\nreport: `{notice.report_command}` (videos in {notice.output})"


def duration_text(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# -- signing -----------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``"<timestamp>." + body`` keyed with ``secret``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def signed_headers(
    body: bytes, *, secret: str | None, timestamp: int, event: str, delivery_id: str
) -> dict[str, str]:
    """The request's headers; unsigned (no signature header) when no secret is set."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "seedq-notify/1",
        TIMESTAMP_HEADER: str(timestamp),
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
    return headers


def verify(
    secret: str,
    body: bytes,
    *,
    timestamp: str,
    signature_header: str,
    now: float,
    tolerance_s: float = REPLAY_TOLERANCE_S,
) -> bool:
    """What a receiver checks: the timestamp is recent and the signature is the body's
    (compared in constant time)."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, sent_at, body), signature_header)


# -- retries -----------------------------------------------------------------------------


def retry_delay_s(
    attempt: int, *, base_s: float, max_s: float, rand: float, retry_after_s: float | None = None
) -> float:
    """The wait before attempt ``attempt + 1`` (``attempt`` ≥ 1 failed): exponential,
    with jitter (``rand`` in [0, 1) picks between half and all of it) so that retries
    spread out; a Retry-After the receiver sent is honoured, up to ``max_s``."""
    delay = compute_backoff(attempt, base_s=base_s, max_s=max_s, jitter=0.5, rand=rand)
    return honour_retry_after(delay, retry_after_s, max_s=max_s)


def retryable_status(status_code: int) -> bool:
    """Worth trying again: the receiver is overloaded or failing, not refusing."""
    return status_code in (408, 425, 429) or status_code >= 500

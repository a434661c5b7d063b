"""Run notifications, the pure half (seedq.notify): which event a run is at, the event's
marker name, the payload and its Slack text, the signature (against a vector computed
with openssl), the receiver's check, and the retry delays."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from seedq.budget import BudgetState
from seedq.notify import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notice,
    NotifyEvent,
    RunState,
    Spend,
    decide_event,
    event_key,
    notify_targets,
    payload,
    retry_delay_s,
    retryable_status,
    shown_url,
    signature,
    signed_headers,
    verify,
)

SECRET = "whsec_test_secret"
BUDGET_PAUSE = "budget: 0.77 committed of 1.00; the next job would cost 0.48"
OPERATOR = "paused by an operator"


def state(status: str, counts: dict[str, int], **kw: object) -> RunState:
    return RunState("r1", status, counts=counts, total=4, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("run", "event"),
    [
        (state("active", {"delivered": 3, "failed": 1}), NotifyEvent.FINISHED),
        (state("active", {"delivered": 3, "submitted": 1}), None),
        (state("registering", {"delivered": 4}), None),  # more jobs may still come
        (state("cancelled", {"cancelled": 3, "delivered": 1}), NotifyEvent.FINISHED),
        (
            state("paused", {"registered": 4}, reason="401: the key was rejected"),
            NotifyEvent.PAUSED,
        ),
        (state("paused", {"registered": 4}, reason=OPERATOR), None),
        (
            state("paused", {"registered": 4}, reason="outside 22:00-06:00", paused_by="window"),
            None,
        ),
        # A budget pause is told once what fits inside the cap has delivered.
        (state("paused", {"registered": 4}, reason=BUDGET_PAUSE, holding=2), None),
        (state("paused", {"registered": 2, "generated": 2}, reason=BUDGET_PAUSE), None),
        (
            state("paused", {"registered": 2, "delivered": 2}, reason=BUDGET_PAUSE),
            NotifyEvent.BUDGET_REACHED,
        ),
        (state("paused", {"delivered": 4}, reason=BUDGET_PAUSE), NotifyEvent.FINISHED),
    ],
)
def test_the_event_a_run_is_at(run: RunState, event: NotifyEvent | None) -> None:
    assert decide_event(run, quiet_reasons=(OPERATOR,)) is event


def test_event_keys_name_each_occurrence_once() -> None:
    assert event_key(NotifyEvent.FINISHED, "anything") == "finished"
    first = event_key(NotifyEvent.BUDGET_REACHED, BUDGET_PAUSE)
    assert first.startswith("budget_reached:")
    assert event_key(NotifyEvent.BUDGET_REACHED, BUDGET_PAUSE) == first
    raised = "budget: 1.92 committed of 2.00; the next job would cost 0.48"
    assert event_key(NotifyEvent.BUDGET_REACHED, raised) != first  # a new cap, a new event
    assert event_key(NotifyEvent.PAUSED, "401").startswith("paused:")


def test_targets_are_the_runs_then_the_workers_each_once() -> None:
    assert notify_targets(["https://a.example/h", " "], "https://b.example/h") == [
        "https://a.example/h",
        "https://b.example/h",
    ]
    assert notify_targets(["https://a.example/h"], "https://a.example/h") == ["https://a.example/h"]
    assert notify_targets([], None) == []


def test_logs_show_a_webhook_without_its_path_or_query() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET?token=abc"
    assert shown_url(url) == "https://hooks.slack.com/…"
    assert shown_url("http://127.0.0.1:8080/hook?k=v") == "http://127.0.0.1:8080/…"


def notice(event: NotifyEvent = NotifyEvent.FINISHED, reason: str = "") -> Notice:
    return Notice(
        event=event,
        key=event_key(event, reason),
        run_id="r20261201-000000-abcdef",
        run_name="example catalog",
        status="paused" if reason else "active",
        reason=reason,
        counts={"delivered": 3, "failed": 1, "registered": 0},
        total=4,
        wall_time_s=192.34,
        spend=Spend(1.536, 1.5, 1, BudgetState(cap=2.0, reserved=0.0, spent=1.536)),
        output="s3://bucket/clips",
        report_command="seedq report r20261201-000000-abcdef --format html",
    )


def test_the_payload_carries_the_run_its_counts_spend_time_and_report() -> None:
    body = payload(notice())
    assert body["event"] == "run.finished"
    assert body["id"] == "r20261201-000000-abcdef:finished"
    assert body["run"] == {
        "id": "r20261201-000000-abcdef",
        "name": "example catalog",
        "status": "active",
        "reason": "",
        "total": 4,
    }
    assert body["counts"] == {"delivered": 3, "failed": 1}
    assert body["spend"] == {
        "estimated": 1.536,
        "billed": 1.5,
        "bills_pending": 1,
        "budget": {"cap": 2.0, "spent": 1.536, "reserved": 0.0},
    }
    assert body["wall_time_s"] == 192.3
    assert body["report"] == {
        "output": "s3://bucket/clips",
        "command": "seedq report r20261201-000000-abcdef --format html",
    }
    assert body["text"] == (
        "seedq run *example catalog* (`r20261201-000000-abcdef`) finished: 3 delivered, "
        "1 failed of 4 in 3m12s; estimated 1.54, 1.54 of a 2.00 budget spent\n"
        "report: `seedq report r20261201-000000-abcdef --format html` "
        "(videos in s3://bucket/clips)"
    )
    json.dumps(body)  # plain JSON


def test_a_pause_says_why_in_its_text() -> None:
    body = payload(notice(NotifyEvent.PAUSED, "provider rejected the API key"))
    assert body["event"] == "run.paused"
    assert "is paused by an error" in body["text"]
    assert "\n> provider rejected the API key\n" in body["text"]


def test_signature_matches_a_known_vector() -> None:
    # printf '1700000000.{"event":"run.finished"}' | openssl dgst -sha256 -hmac SECRET
    body = b'{"event":"run.finished"}'
    assert signature(SECRET, 1700000000, body) == (
        "sha256=1a670baad190c02d632eaaeb450194c1a30714f0f9a0715e6bd291243ffc73c1"
    )


def test_headers_are_signed_over_the_timestamp_and_the_raw_body() -> None:
    body = json.dumps(payload(notice())).encode()
    headers = signed_headers(
        body, secret=SECRET, timestamp=1700000000, event="run.finished", delivery_id="r1:finished"
    )
    assert headers[TIMESTAMP_HEADER] == "1700000000"
    assert headers[DELIVERY_HEADER] == "r1:finished"
    mac = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={mac}"
    assert SECRET not in json.dumps(headers) and SECRET.encode() not in body
    unsigned = signed_headers(body, secret=None, timestamp=1, event="e", delivery_id="d")
    assert SIGNATURE_HEADER not in unsigned


def test_a_receiver_refuses_a_changed_body_another_key_and_a_replay() -> None:
    body = b'{"event":"run.finished"}'
    good = signature(SECRET, 1700000000, body)
    assert verify(SECRET, body, timestamp="1700000000", signature_header=good, now=1700000010)
    assert not verify(
        SECRET, body + b" ", timestamp="1700000000", signature_header=good, now=1700000010
    )
    assert not verify("other", body, timestamp="1700000000", signature_header=good, now=1700000010)
    # The timestamp is signed: moving it forward to pass the window breaks the signature.
    assert not verify(SECRET, body, timestamp="1700000900", signature_header=good, now=1700000910)
    assert not verify(SECRET, body, timestamp="1700000000", signature_header=good, now=1700000600)
    assert not verify(SECRET, body, timestamp="soon", signature_header=good, now=1700000000)


@pytest.mark.parametrize(
    ("attempt", "rand", "delay"),
    [
        (1, 0.0, 1.0),
        (1, 0.999999, 2.0),
        (2, 0.0, 2.0),
        (3, 0.5, 6.0),
        (10, 0.0, 30.0),
        (10, 0.99, 59.7),
    ],
)
def test_retry_delays_grow_with_jitter_up_to_a_ceiling(
    attempt: int, rand: float, delay: float
) -> None:
    assert retry_delay_s(attempt, base_s=2.0, max_s=60.0, rand=rand) == pytest.approx(
        delay, abs=1e-3
    )


def test_a_retry_after_is_honoured_within_the_ceiling() -> None:
    assert retry_delay_s(1, base_s=2.0, max_s=60.0, rand=0.0, retry_after_s=30.0) == 30.0
    assert retry_delay_s(1, base_s=2.0, max_s=60.0, rand=0.0, retry_after_s=3600.0) == 60.0


@pytest.mark.parametrize(
    ("status", "again"),
    [(500, True), (503, True), (429, True), (408, True), (400, False), (404, False), (410, False)],
)
def test_which_answers_are_worth_another_try(status: int, again: bool) -> None:
    assert retryable_status(status) is again

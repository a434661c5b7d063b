from __future__ import annotations

from typing import Any

import pytest

from provider.models import Generation, GenerationPage
from worker.history import reached_older, read_on, window_start
from worker.reconcile import SKEW_S, Verdict, kept_params, matches, reconcile

MODEL = "bytedance-seedance-2-0-image-to-video"
SENT = {"prompt": "a mug", "input_image": "https://x/a.png", "duration": 5, "generate_audio": False}


def gen(gid: str, at: float = 1000.0, **changes: Any) -> Generation:
    data = {
        "generation_id": gid,
        "model_name": MODEL,
        "status": "queued",
        "enqueued_at": at,
        "media_type": "video",
        "result_url": None,
        "error_message": None,
        "started_at": None,
        "completed_at": None,
        **SENT,
        **changes,
    }
    return Generation.model_validate(data)


@pytest.mark.parametrize(
    ("g", "ok"),
    [
        (gen("a"), True),
        (gen("a", at=996.0), True),  # within the clock-skew allowance
        (gen("a", at=990.0), False),  # enqueued before we started sending
        (gen("a", at=2000.0), False),  # after now
        (gen("a", prompt="a lamp"), False),
        (gen("a", duration=6), False),
        (gen("a", duration=5.0), True),
        (gen("a", generate_audio=0), False),  # a bool is not an int
        (gen("a", model_name="other-model"), False),
        (gen("a", seed=7), True),  # extra echoed fields do not matter
    ],
)
def test_matches(g: Generation, ok: bool) -> None:
    assert matches(g, model=MODEL, sent=SENT, started_at=1000.0, now=1500.0) is ok


def test_missing_echo_does_not_match() -> None:
    g = Generation.model_validate(
        {
            "generation_id": "a",
            "model_name": MODEL,
            "status": "queued",
            "enqueued_at": 1000.0,
            "prompt": "a mug",
        }
    )
    assert not matches(g, model=MODEL, sent=SENT, started_at=1000.0, now=1500.0)


@pytest.mark.parametrize(
    ("gens", "now", "taken", "verdict"),
    [
        ([gen("a")], 1010.0, set(), Verdict.FOUND),
        ([gen("a"), gen("b", prompt="x")], 1010.0, set(), Verdict.FOUND),
        ([gen("a"), gen("b")], 1010.0, set(), Verdict.AMBIGUOUS),
        ([gen("a"), gen("b")], 1010.0, {"b"}, Verdict.FOUND),  # b belongs to another job
        ([], 1010.0, set(), Verdict.WAIT),  # the send may still be under way
        ([], 1100.0, set(), Verdict.ABSENT),  # long past: it never arrived
        ([gen("a")], 1100.0, {"a"}, Verdict.ABSENT),
    ],
)
def test_reconcile(gens: list[Generation], now: float, taken: set[str], verdict: Verdict) -> None:
    assert (
        reconcile(
            gens, model=MODEL, sent=SENT, started_at=1000.0, now=now, grace_s=90.0, taken=taken
        ).verdict
        is verdict
    )


PRESIGNED = (
    "https://s3.example/b/_inputs/ab.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIA%2F20261125%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261125T184108Z"
    "&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Security-Token=tok-SECRET"
    "&X-Amz-Signature=sig-SECRET"
)


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (
            PRESIGNED,
            "https://s3.example/b/_inputs/ab.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Date=20261125T184108Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host",
        ),
        ("https://x/a.png", "https://x/a.png"),
        ("https://x/a.png?v=1&b=%2F", "https://x/a.png?v=1&b=%2F"),
        (
            "https://x/a.png?Signature=s&Expires=1&AWSAccessKeyId=A",
            "https://x/a.png?Expires=1",
        ),
        ("https://x/a.png?x-goog-signature=s&X-Goog-Date=1", "https://x/a.png?X-Goog-Date=1"),
        ("https://x/a.png?X-Amz-Signature=s", "https://x/a.png"),
    ],
)
def test_kept_params_drop_url_credentials(url: str, kept: str) -> None:
    assert kept_params({"input_image": url, "duration": 5}) == {"input_image": kept, "duration": 5}
    assert "SECRET" not in str(kept_params({"input_image": url}))


def test_kept_params_still_match_the_echoed_presigned_url() -> None:
    """The job store keeps no session token or signature, and the reconcile still finds
    the generation the full URL was sent in; another presign of the same object (another
    second) does not match."""
    sent = {**SENT, "input_image": PRESIGNED}
    kept = kept_params(sent)
    assert "tok-SECRET" not in str(kept) and "sig-SECRET" not in str(kept)
    assert matches(
        gen("a", input_image=PRESIGNED), model=MODEL, sent=kept, started_at=1000.0, now=1500.0
    )
    assert matches(
        gen("a", input_image=PRESIGNED), model=MODEL, sent=sent, started_at=1000.0, now=1500.0
    )
    later = PRESIGNED.replace("T184108Z", "T184109Z").replace("sig-SECRET", "other")
    assert not matches(
        gen("a", input_image=later), model=MODEL, sent=kept, started_at=1000.0, now=1500.0
    )


def test_a_generation_kept_by_an_unfinished_pass_holds_no_credentials() -> None:
    """An interrupted reconcile keeps its matches in the job store: as the sent params,
    without the echoed URL's signature and session token, and still matching."""
    from worker.submitting import kept_generation

    kept = kept_generation(gen("a", input_image=PRESIGNED))
    assert "tok-SECRET" not in str(kept) and "sig-SECRET" not in str(kept)
    again = Generation.model_validate(kept)
    assert matches(
        again, model=MODEL, sent=SENT | {"input_image": PRESIGNED}, started_at=1000.0, now=1500.0
    )


# -- reading a long history: when to stop paging (worker.history) ---------------------------


def page(
    ats: list[float | None], *, number: int = 1, size: int = 3, pages: int = 0
) -> GenerationPage:
    rows = [
        {"generation_id": f"g{number}-{n}", "status": "succeeded", "enqueued_at": at}
        for n, at in enumerate(ats)
    ]
    return GenerationPage.model_validate(
        {"generations": rows, "page_number": number, "page_size": size, "total_pages": pages}
    )


@pytest.mark.parametrize(
    ("ats", "pages", "more"),
    [
        ([1030.0, 1020.0, 1010.0], 0, True),  # all in the window, a full page: read on
        ([1030.0, 1020.0, 996.0], 0, True),  # within the skew allowance of 1000
        ([1030.0, 1020.0, 990.0], 0, False),  # a row before the window: nothing older matters
        ([990.0, 980.0, 970.0], 0, False),  # the first page is older already
        ([1030.0, 1020.0], 0, False),  # a short page is the last
        ([], 0, False),  # an empty page is the last
        ([1030.0, 1020.0, 1010.0], 1, False),  # the totals say it was the last page
        ([1030.0, None, 1010.0], 0, True),  # a row without a time proves nothing
        ([None, None, None], 0, True),  # nor do three
        ([None, 990.0, None], 0, False),  # one older row is enough
    ],
)
def test_read_on_stops_at_the_first_row_before_the_window(
    ats: list[float | None], pages: int, more: bool
) -> None:
    since = window_start(1000.0)
    assert read_on(page(ats, pages=pages), since=since) is more


@pytest.mark.parametrize(
    ("ats", "older"),
    [
        ([], False),
        ([None], False),
        ([995.0], False),  # the window's first second is still in it
        ([994.9], True),
        ([2000.0, 994.0], True),
    ],
)
def test_reached_older(ats: list[float | None], older: bool) -> None:
    rows = page(ats).generations
    assert reached_older(rows, since=window_start(1000.0)) is older
    assert window_start(1000.0) == 1000.0 - SKEW_S

"""URL credentials (a presigned input URL's signature, credential, session token) never
leave the job spec: a delivery's sidecar and the run's reports show the URL redacted,
while the provider still gets it whole. Unit tests of seedq.credentials first, then a
whole delivery driven as in test_steps (the simulator over HTTP, the steps called
directly) whose input image is served under a presigned-looking URL."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from PIL import Image

from producer.jobs import JobSpec
from producer.resume import sidecar_proves_delivered
from provider.classify import scrub
from seedq.credentials import (
    CREDENTIAL_PARAMS,
    REDACTED,
    redact_credentials,
    redacted_params,
    strip_credentials,
)
from seedq.logs import RedactingFormatter, Redactor
from seedq.report import render, report_rows, row_of
from tests.worker.test_steps import ROW, Pipeline, pipeline_on
from worker.delivery import deliver_job, sidecar_key
from worker.job import DONE
from worker.reconcile import kept_params

SIGNATURE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLEtokenVALUEfromSTS"
PRESIGNED_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={ACCESS_KEY_ID}%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600"
    f"&X-Amz-Security-Token={SESSION_TOKEN}"
    f"&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)
CREDENTIALS = (SIGNATURE, ACCESS_KEY_ID, SESSION_TOKEN)


def presigned(url: str) -> str:
    return f"{url}?{PRESIGNED_QUERY}"


def assert_no_credential(text: str) -> None:
    for credential in CREDENTIALS:
        assert credential not in text


# -- the pure functions --------------------------------------------------------------------


def test_strip_removes_only_credentials_byte_for_byte() -> None:
    url = presigned("https://bucket.s3.amazonaws.com/in/a.png")
    stripped = strip_credentials(url)
    assert stripped == (
        "https://bucket.s3.amazonaws.com/in/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    )
    assert strip_credentials("https://cdn.example/a.png?w=100") == "https://cdn.example/a.png?w=100"


@pytest.mark.parametrize(
    "query",
    [
        "Signature=abcdef123&Expires=1&AWSAccessKeyId=AKIAEXAMPLEKEY",  # SigV2, CloudFront
        "X-Goog-Signature=abcdef123&X-Goog-Credential=svc%40proj",  # GCS
        "sv=2022&sig=abcdef123%3D",  # Azure SAS
        "token=abcdef123",
        "access_token=abcdef123",
        "key=abcdef123",
        "X%2DAmz%2DSignature=abcdef123",  # the name itself percent-encoded
    ],
)
def test_every_kind_of_credential_is_redacted_in_text(query: str) -> None:
    line = f"could not fetch https://host.example/a.png?{query} (HTTP 403)"
    redacted = redact_credentials(line)
    assert "abcdef123" not in redacted and "AKIAEXAMPLEKEY" not in redacted
    assert "svc%40proj" not in redacted
    assert redacted.startswith("could not fetch https://host.example/a.png?")
    assert redacted.endswith(" (HTTP 403)")


def test_redaction_keeps_the_rest_of_the_url_readable() -> None:
    url = presigned("https://bucket.s3.amazonaws.com/in/a.png")
    shown = redact_credentials(url)
    assert_no_credential(shown)
    assert shown.startswith("https://bucket.s3.amazonaws.com/in/a.png?")
    assert f"X-Amz-Signature={REDACTED}" in shown and "X-Amz-Date=20250101T000000Z" in shown
    assert redact_credentials("keyframes=3&monkey=1 a=b") == "keyframes=3&monkey=1 a=b"


def test_one_list_for_every_use() -> None:
    assert {"x-amz-signature", "x-amz-credential", "x-amz-security-token"} <= CREDENTIAL_PARAMS
    assert {"signature", "sig", "token", "key", "access_token"} <= CREDENTIAL_PARAMS
    params = {"input_image": presigned("https://h.example/a.png"), "duration": 4}
    assert_no_credential(json.dumps(kept_params(params)))
    assert_no_credential(json.dumps(redacted_params(params)))
    assert redacted_params(params)["duration"] == 4


def test_log_lines_and_provider_messages_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    url = presigned("https://h.example/a.png")
    assert_no_credential(Redactor()(f"enqueue refused for {url}"))
    assert_no_credential(scrub(f"could not fetch input_image {url}: HTTP 403"))
    record = logging.LogRecord("seedq", logging.WARNING, __file__, 1, "sent %s", (url,), None)
    assert_no_credential(RedactingFormatter(None).format(record))


def test_report_row_redacts_an_error_that_quotes_a_url() -> None:
    raw = {"state": "failed", "error": "generation failed: " + presigned("https://h.example/a")}
    assert_no_credential(row_of("j1", raw).error)


def test_resume_proof_holds_with_the_sidecars_redacted_params() -> None:
    params = {"prompt": "p", "input_image": presigned("https://h.example/a.png")}
    job = JobSpec("j1", "m.csv", 2, "model-x", params, "j1.mp4")
    side = {
        "job_id": "j1",
        "provider": "https://hub.example",
        "model": "model-x",
        "params": redacted_params(params),
        "video": {"size_bytes": 10},
    }
    hub = "https://hub.example/"
    assert sidecar_proves_delivered(job, side, video_bytes=10, provider_url=hub)
    other = dict(side, params=redacted_params(dict(params, input_image=presigned("https://h/b"))))
    assert not sidecar_proves_delivered(job, other, video_bytes=10, provider_url=hub)


# -- through a delivery --------------------------------------------------------------------


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    with pipeline_on(fakeredis.FakeRedis(server=fakeredis.FakeServer()), tmp_path) as p:
        yield p


def test_presigned_input_url_stays_out_of_sidecar_and_report(pipeline: Pipeline) -> None:
    p = pipeline
    image = p.folder / "served.png"
    Image.new("RGB", (64, 48), (40, 90, 200)).save(image)
    # The loopback server answers on the path alone: the query stands for a real
    # presigned URL's, which the provider must receive whole.
    url = presigned(p.publisher.publish_file(image))
    run_id = p.submit_manifest([{"id": "clip-1", "input_image": url, **ROW}])
    assert json.loads(p.job("clip-1")["spec"])["params"]["input_image"] == url

    p.until_generated(run_id, "clip-1")
    assert deliver_job(p.rt, run_id, "clip-1") is DONE

    job = p.job("clip-1")
    assert job["state"] == "delivered", job
    assert_no_credential(job["sent_params"])
    text = p.storage.path(sidecar_key("clip-1.mp4")).read_text(encoding="utf-8")
    assert_no_credential(text)
    shown = json.loads(text)["params"]["input_image"]
    assert shown == redact_credentials(url) and shown.startswith(url.split("?")[0])
    info = p.rt.store.run(run_id)
    assert info is not None
    rows = report_rows(p.rt.store, run_id)
    for fmt in ("jsonl", "csv", "html"):
        assert_no_credential(render(fmt, info, rows))

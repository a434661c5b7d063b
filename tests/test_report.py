"""Run reports (seedq.report, seedq.report_html): one row per job in every format, no
secret or access-granting URL in JSON lines and CSV, and an HTML page that is
self-contained, escapes what jobs carry, and has a poster per delivered clip.

``report_world`` is shared with tests/test_report_browser.py (real Chromium)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import fakeredis
import pytest
from PIL import Image

from producer.jobs import JobSpec
from seedq import report_html
from seedq.contract import JobState
from seedq.report import FORMATS, ReportRow, render, report_rows, row_of, to_csv, totals
from seedq.report_html import poster_frame
from seedq.store import JobStore, RunInfo
from simulator.render import VideoSpec, render_video
from storage.base import sha256_file
from storage.local import LocalStorage

RUN = "run-report"
HOSTILE = "<script>alert(1)</script> & \"quotes\" 'too'"
API_KEY = "sk-report-test-secret-0123456789"
RESULT_URL = f"https://results.example/clip.mp4?X-Signature=abc&token={API_KEY}"


@dataclass
class ReportWorld:
    store: JobStore
    storage: LocalStorage
    info: RunInfo


def make_clip(path: Path, colour: tuple[int, int, int] = (30, 90, 200)) -> None:
    spec = VideoSpec(
        width=96, height=64, duration_s=1, fps=8, generate_audio=False, watermark=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_video(spec, Image.new("RGB", (96, 64), colour)))


def report_world(folder: Path) -> ReportWorld:
    """A run of four jobs: two delivered (real clips on disk), one failed with a hostile
    prompt and error, one still waiting."""
    store = JobStore(fakeredis.FakeRedis())
    storage = LocalStorage(folder / "out")
    store.create_run(RUN, "report <b>run</b>", {"priority": 0})
    prompts = ["a blue mug", "a yellow lamp", HOSTILE, "waiting for a slot"]
    specs = [
        JobSpec(f"clip-{i}", "m.csv", i + 2, "model", {"prompt": p}, f"clips/clip-{i}.mp4")
        for i, p in enumerate(prompts)
    ]
    for _ in store.register(RUN, [(s.id, s.fingerprint, s.to_record()) for s in specs]):
        pass
    store.set_run_status(RUN, "active")
    for i in range(3):
        job_id = specs[i].id
        store.move(job_id, RUN, JobState.SUBMITTING, expect=[JobState.REGISTERED])
        store.move(
            job_id,
            RUN,
            JobState.SUBMITTED,
            expect=[JobState.SUBMITTING],
            generation_id=f"gen-{i}",
            submitted_at=1_700_000_010.0 + i,
        )
    for i, colour in ((0, (30, 90, 200)), (1, (230, 180, 40))):
        job_id = specs[i].id
        store.move(
            job_id,
            RUN,
            JobState.GENERATED,
            expect=[JobState.SUBMITTED],
            result_url=RESULT_URL,
            generated_at=1_700_000_030.0,
        )
        clip = storage.path(specs[i].output_key)
        make_clip(clip, colour)
        store.move(
            job_id,
            RUN,
            JobState.DELIVERED,
            expect=[JobState.GENERATED],
            output_uri=storage.uri(specs[i].output_key),
            size_bytes=clip.stat().st_size,
            sha256=sha256_file(clip),
            duration_s=1.0,
            cost=0.25,
            delivered_at=1_700_000_040.0 + i,
        )
    store.move(
        specs[2].id,
        RUN,
        JobState.FAILED,
        expect=[JobState.SUBMITTED],
        error=f"generation failed: {HOSTILE}",
        failed_step="generate",
    )
    info = store.run(RUN)
    assert info is not None
    return ReportWorld(store, storage, info)


@pytest.fixture
def rw(tmp_path: Path) -> ReportWorld:
    return report_world(tmp_path)


def parse(fmt: str, text: str) -> list[dict[str, str]]:
    if fmt == "jsonl":
        return [{k: "" if v is None else str(v) for k, v in json.loads(line).items()}
                for line in text.splitlines()]  # fmt: skip
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_rows_one_per_job_and_no_secret(rw: ReportWorld, fmt: str) -> None:
    text = render(fmt, rw.info, report_rows(rw.store, RUN))
    rows = {r["id"]: r for r in parse(fmt, text)}
    assert list(rows) == ["clip-0", "clip-1", "clip-2", "clip-3"]
    assert [rows[j]["status"] for j in rows] == ["delivered", "delivered", "failed", "registered"]
    assert rows["clip-0"]["generation_id"] == "gen-0"
    assert rows["clip-0"]["output_uri"].endswith("clips/clip-0.mp4")
    assert float(rows["clip-1"]["cost"]) == 0.25 and float(rows["clip-1"]["output_s"]) == 1.0
    assert int(rows["clip-0"]["size_bytes"]) > 0
    assert float(rows["clip-1"]["delivered_at"]) == 1_700_000_041.0
    assert "generation failed" in rows["clip-2"]["error"]
    assert API_KEY not in text and "X-Signature" not in text and "results.example" not in text


def test_csv_cells_never_start_a_formula() -> None:
    row = row_of("x", {"state": "failed", "error": '=HYPERLINK("http://evil")'})
    assert "'=HYPERLINK" in to_csv([row])


@pytest.mark.parametrize("brk", ["\r", "\n", "\r\n"])
def test_csv_no_line_of_a_cell_starts_a_formula(brk: str) -> None:
    """A line break inside a prompt must not start a spreadsheet row with a formula."""
    prompt = f"nice sneaker{brk}=1+1*cmd|' /C calc'!A0{brk}@SUM(A1){brk}\t-2"
    spec = json.dumps({"output_key": "a.mp4", "params": {"prompt": prompt}})
    row = row_of("x", {"state": "failed", "spec": spec, "error": f"boom{brk}+evil"})
    text = to_csv([row])
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(parsed) == 1
    assert parsed[0]["prompt"] == prompt.replace(brk + "=", brk + "'=").replace(
        brk + "@", brk + "'@"
    ).replace(brk + "\t", brk + "'\t")
    assert parsed[0]["error"] == f"boom{brk}'+evil"
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        assert not line.startswith(("=", "+", "-", "@", "\t")), line


def test_html_has_every_job_escaped_with_filter_and_posters(rw: ReportWorld) -> None:
    page = render("html", rw.info, report_rows(rw.store, RUN), rw.storage)
    for job_id in ("clip-0", "clip-1", "clip-2", "clip-3"):
        assert f">{job_id} <span" in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot; &#x27;too&#x27;" in page
    assert "report &lt;b&gt;run&lt;/b&gt;" in page
    assert "only failed (1)" in page and "only-failed" in page
    assert page.count("data:image/jpeg;base64,") == 2  # one poster per delivered clip
    assert page.count("<video ") == 2 and rw.storage.path("clips/clip-0.mp4").as_uri() in page
    assert API_KEY not in page and "results.example" not in page
    # Self-contained: nothing is fetched from elsewhere.
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_html_without_storage_still_lists_every_job(rw: ReportWorld) -> None:
    page = render("html", rw.info, report_rows(rw.store, RUN))
    assert page.count('class="card') == 4 and "data:image/jpeg" not in page


def test_totals() -> None:
    base = row_of("a", {"state": "delivered", "cost": "0.5", "duration_s": "4",
                        "created_at": "100", "delivered_at": "130"})  # fmt: skip
    failed = row_of("b", {"state": "failed", "charged": "0.25", "created_at": "90"})
    got = totals([base, failed])
    assert got.by_state == {"delivered": 1, "failed": 1}
    assert (got.spend, got.output_s, got.wall_s) == (0.75, 4.0, 40.0)
    assert totals([]).wall_s is None


def test_estimated_and_billed_are_apart_with_warnings(rw: ReportWorld) -> None:
    """clip-0's bill is known, clip-1's is pending and it was delivered with a warning;
    clip-2 never generated (nothing billed), clip-3 waits."""
    rw.store.billing.record("clip-0", RUN, 0.3, 1_700_000_100.0)
    rw.store.update_job("clip-1", warnings=json.dumps(["has an audio track, but ..."]))
    rows = report_rows(rw.store, RUN)
    by_id = {r.id: r for r in rows}
    assert (by_id["clip-0"].cost, by_id["clip-0"].billed_cost) == (0.25, 0.3)
    assert [r.billed_status for r in rows] == ["billed", "pending", "", ""]
    assert by_id["clip-1"].billed_cost is None and by_id["clip-1"].warnings
    got = totals(rows)
    assert (got.spend, got.billed, got.billed_jobs, got.billed_pending) == (0.5, 0.3, 1, 1)
    assert (got.billed_unknown, got.warned) == (0, 1)

    table = {r["id"]: r for r in csv.DictReader(io.StringIO(render("csv", rw.info, rows)))}
    assert (table["clip-0"]["cost"], table["clip-0"]["billed_cost"]) == ("0.25", "0.3")
    assert table["clip-1"]["billed_status"] == "pending"
    assert table["clip-1"]["warnings"].startswith("has an audio track")
    lines = [json.loads(line) for line in render("jsonl", rw.info, rows).splitlines()]
    assert lines[1]["warnings"] == ["has an audio track, but ..."]
    page = render("html", rw.info, rows)
    assert "estimated 0.25 · billed 0.3" in page and "billed pending" in page
    assert "0.3 (1 job(s) billed, 1 pending)" in page
    assert "warning: has an audio track" in page


def test_a_bill_that_never_showed_is_said_as_such() -> None:
    row = row_of("a", {"state": "delivered", "cost": "0.5", "generated_at": "1",
                       "billed_status": "unknown"})  # fmt: skip
    assert (row.billed_status, row.billed_cost) == ("unknown", None)
    assert totals([row]).billed_unknown == 1


def test_poster_frame_is_a_jpeg_of_the_clip(tmp_path: Path) -> None:
    clip = tmp_path / "c.mp4"
    make_clip(clip, (200, 30, 30))
    jpeg = poster_frame(clip)
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size[0] <= 320
    r, g, b = image.convert("RGB").getpixel((image.width // 2, image.height // 2))  # type: ignore[misc]
    assert r > 150 and g < 90 and b < 90


def test_unknown_format(rw: ReportWorld) -> None:
    assert "pdf" not in FORMATS
    with pytest.raises(ValueError, match="unknown report format"):
        render("pdf", rw.info, [])


DOCUMENTED = {"id", "status", "output_uri", "generation_id", "output_s", "size_bytes", "cost"}
TIMING_FIELDS = {"created_at", "submitted_at", "generated_at", "delivered_at", "error"}


def test_row_fields_are_the_documented_ones() -> None:
    assert set(ReportRow.__dataclass_fields__) >= DOCUMENTED | TIMING_FIELDS


def test_posters_stop_at_the_cap_links_do_not(
    rw: ReportWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_html, "MAX_POSTERS", 1)
    media = report_html.media_for(report_rows(rw.store, RUN), rw.storage)
    assert sorted(media) == ["clip-0", "clip-1"]
    assert [m.poster_jpeg is not None for m in media.values()] == [True, False]


def test_unknown_format_on_the_command_line_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.delenv("SEEDQ_DEBUG", raising=False)
    result = CliRunner().invoke(app, ["report", "some-run", "--format", "xml"])
    assert result.exit_code == 2, result.output
    assert "--format" in result.output and "use one of" in result.output
    assert "internal error" not in result.output and "Traceback" not in result.output

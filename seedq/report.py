"""Run reports: one row per job, as JSON lines, CSV or one self-contained HTML page.

Rows come from the job store only and carry no secret and no presigned URL (the
provider's ``result_url`` is left out on purpose): JSON lines and CSV files get mailed
around. The HTML page (``seedq.report_html``) adds poster frames and player links.

Money is shown twice, kept apart: ``cost`` is seedq's estimate (at delivery, else what
the budget charged), ``billed_cost`` what the provider billed (``seedq.billing``), with
``billed_status`` saying ``pending`` or ``unknown`` while there is none. ``warnings``
lists how a delivered clip differs from the request (``worker.verify``).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

from seedq.billing import BILLED, PENDING, UNKNOWN, billing_status
from seedq.contract import JobState
from seedq.credentials import redact_credentials
from seedq.store import JobStore, RunInfo

FORMATS = ("jsonl", "csv", "html")
TIMINGS = ("created_at", "submitted_at", "generated_at", "delivered_at")
# A cell starting with one of these is a formula to a spreadsheet (CSV injection; OWASP
# and ASVS 1.2.10). Checked at the start of every line inside a cell too: a reader that
# splits rows on a bare line break would otherwise start a row with what follows it.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One job as a report shows it."""

    id: str
    status: str
    output_uri: str
    output_key: str
    generation_id: str
    output_s: float | None
    size_bytes: int | None
    cost: float | None  # estimated
    billed_cost: float | None  # what the provider billed, once known
    billed_status: str  # billed | pending | unknown; empty when nothing was generated
    warnings: list[str]
    created_at: float | None
    submitted_at: float | None
    generated_at: float | None
    delivered_at: float | None
    error: str
    prompt: str

    @property
    def failed(self) -> bool:
        return self.status == JobState.FAILED


@dataclass(frozen=True, slots=True)
class Totals:
    jobs: int
    by_state: dict[str, int]
    spend: float  # estimated
    output_s: float
    wall_s: float | None
    billed: float = 0.0  # the sum of the bills known
    billed_jobs: int = 0
    billed_pending: int = 0
    billed_unknown: int = 0
    warned: int = 0  # delivered jobs with warnings


def _num(raw: dict[str, str], name: str) -> float | None:
    try:
        return float(raw[name]) if raw.get(name) else None
    except ValueError:
        return None


def row_of(job_id: str, raw: dict[str, str]) -> ReportRow:
    """A job's record as a report row (pure)."""
    try:
        spec: dict[str, Any] = json.loads(raw.get("spec") or "{}")
    except ValueError:
        spec = {}
    size = _num(raw, "size_bytes")
    cost = _num(raw, "cost")
    if cost is None and not raw.get("billed_cost"):
        cost = _num(raw, "charged") or None  # charged is the bill once one is known
    paid = bool(raw.get("generated_at") or raw.get("billed_cost") or raw.get("billed_status"))
    return ReportRow(
        id=job_id,
        status=raw.get("state", "?"),
        output_uri=raw.get("output_uri", ""),
        output_key=str(spec.get("output_key", "")),
        generation_id=raw.get("generation_id", ""),
        output_s=_num(raw, "duration_s"),
        size_bytes=int(size) if size is not None else None,
        cost=cost,
        billed_cost=_num(raw, "billed_cost"),
        billed_status=billing_status(raw) if paid else "",
        warnings=_warnings(raw.get("warnings")),
        created_at=_num(raw, "created_at"),
        submitted_at=_num(raw, "submitted_at"),
        generated_at=_num(raw, "generated_at"),
        delivered_at=_num(raw, "delivered_at"),
        error=redact_credentials(raw.get("error") or raw.get("last_error", "")),
        prompt=str(dict(spec.get("params") or {}).get("prompt", "")),
    )


def _warnings(text: str | None) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return [text or ""]
    return [str(w) for w in value] if isinstance(value, list) else [str(value)]


def report_rows(store: JobStore, run_id: str) -> list[ReportRow]:
    return [row_of(job_id, raw) for job_id, raw in store.run_jobs(run_id)]


def archive_rows(store: JobStore, run_id: str) -> list[ReportRow]:
    """The rows a run's archive keeps (``worker.retention``): its jobs whose record is
    still its own. A job registered again into a later run is that run's to archive;
    a record already gone has nothing left to say."""
    return [
        row_of(job_id, raw) for job_id, raw in store.run_jobs(run_id) if raw.get("run_id") == run_id
    ]


def totals(rows: list[ReportRow]) -> Totals:
    starts = [r.created_at for r in rows if r.created_at]
    ends = [t for r in rows for t in (r.delivered_at, r.generated_at, r.submitted_at) if t]
    return Totals(
        jobs=len(rows),
        by_state=dict(Counter(r.status for r in rows)),
        spend=round(sum(r.cost or 0.0 for r in rows), 6),
        output_s=round(sum(r.output_s or 0.0 for r in rows if r.status == "delivered"), 3),
        wall_s=round(max(ends) - min(starts), 3) if starts and ends else None,
        billed=round(sum(r.billed_cost or 0.0 for r in rows), 6),
        billed_jobs=sum(1 for r in rows if r.billed_status == BILLED),
        billed_pending=sum(1 for r in rows if r.billed_status == PENDING),
        billed_unknown=sum(1 for r in rows if r.billed_status == UNKNOWN),
        warned=sum(1 for r in rows if r.warnings),
    )


def billed_summary(t: Totals) -> str:
    """The billed total for people, never passing an estimate off as a bill."""
    text = f"{t.billed:g} ({t.billed_jobs} job(s) billed"
    if t.billed_pending:
        text += f", {t.billed_pending} pending"
    if t.billed_unknown:
        text += f", {t.billed_unknown} billed unknown"
    return text + ")"


def to_jsonl(rows: list[ReportRow]) -> str:
    return "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in rows)


def _cell(value: Any) -> str:
    """A cell's text with a quote before every line that a spreadsheet reads as a formula."""
    if isinstance(value, list):
        value = "; ".join(str(v) for v in value)
    text = "" if value is None else str(value)
    lines = text.splitlines(keepends=True) or [""]
    return "".join("'" + line if line.startswith(FORMULA_START) else line for line in lines)


def to_csv(rows: list[ReportRow]) -> str:
    """RFC 4180 CSV: rows end in CRLF, so any cell holding a CR or LF is quoted whole."""
    buffer = io.StringIO()
    names = [f.name for f in fields(ReportRow)]
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(getattr(row, name)) for name in names])
    return buffer.getvalue()


def render(fmt: str, info: RunInfo, rows: list[ReportRow], storage: Any | None = None) -> str:
    """The report in one of ``FORMATS``; HTML reads posters through ``storage``."""
    if fmt == "jsonl":
        return to_jsonl(rows)
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "html":
        from seedq.report_html import media_for, render_html

        media = media_for(rows, storage) if storage is not None else {}
        return render_html(info, rows, totals(rows), media)
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")

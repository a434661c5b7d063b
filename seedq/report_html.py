"""The HTML report: one self-contained page (inline CSS and JS, posters embedded as
base64 JPEG, no external request), a gallery of clips with a player each, the run's
totals and a filter for failures. Every value from a job is escaped.

Player links: ``file://`` for a local output; for S3 a presigned GET URL (``Storage.
share_url``). Presigned URLs are allowed here, and only here: the page is for the
operator's eyes, whereas JSON lines and CSV reports carry no URL that grants access.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from seedq.report import ReportRow, Totals, billed_summary
from seedq.store import RunInfo

log = logging.getLogger(__name__)
POSTER_WIDTH = 320
POSTER_AT_S = 0.5
SHARE_EXPIRES_S = 7 * 24 * 3600  # S3's longest presigned lifetime
MAX_POSTER_SOURCE_BYTES = 512 * 1024 * 1024
# Posters are decoded (and for S3 downloaded) one clip at a time: past this many, the
# page still links every clip, without a poster, so a huge run's report stays quick.
MAX_POSTERS = 500


@dataclass(frozen=True, slots=True)
class Media:
    poster_jpeg: bytes | None
    url: str


def poster_frame(path: Path, *, at_s: float = POSTER_AT_S, width: int = POSTER_WIDTH) -> bytes:
    """A JPEG of the frame near ``at_s`` (the first one of a shorter clip), via PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        chosen = None
        for frame in container.decode(stream):
            chosen = frame
            if frame.time is not None and frame.time >= at_s:
                break
        if chosen is None:
            raise ValueError(f"{path}: no video frame")
        image = chosen.to_image()  # type: ignore[no-untyped-call]
    image.thumbnail((width, width))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=80)
    return out.getvalue()


def _fetch(url: str, target: Path) -> Path:
    """The video behind a share URL: a local file as is, an HTTP(S) one downloaded."""
    if url.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return Path(unquote(urlsplit(url).path))
    import httpx

    got = 0
    with httpx.stream("GET", url, timeout=60.0, follow_redirects=True) as response:
        response.raise_for_status()
        with target.open("wb") as handle:
            for chunk in response.iter_bytes():
                got += len(chunk)
                if got > MAX_POSTER_SOURCE_BYTES:
                    raise ValueError("video too large for a poster")
                handle.write(chunk)
    return target


def media_for(rows: list[ReportRow], storage: Any) -> dict[str, Media]:
    """Player links and poster frames of the delivered clips; a clip whose poster cannot
    be made still gets its link (the report must not fail on one bad file)."""
    found: dict[str, Media] = {}
    posters = 0
    with tempfile.TemporaryDirectory(prefix="seedq-report-") as folder:
        for row in rows:
            if row.status != "delivered" or not row.output_key:
                continue
            try:
                url = storage.share_url(row.output_key, expires_s=SHARE_EXPIRES_S)
            except Exception as exc:  # a link is a convenience; the row stays in the report
                log.warning("report: no link for %s: %s", row.id, exc)
                continue
            poster: bytes | None = None
            try:
                if posters < MAX_POSTERS:
                    poster = poster_frame(_fetch(url, Path(folder) / "clip.mp4"))
                    posters += 1
            except Exception:  # unreadable or missing video: no poster, still a row
                poster = None
            found[row.id] = Media(poster, url)
    return found


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;background:#f6f7f9;color:#1d2330}
h1{font-size:20px;margin:0 0 4px}.sub{color:#5b6474;margin-bottom:16px}
.totals{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0 20px}
.totals div{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:8px 14px}
.totals b{display:block;font-size:18px}
.filter button{border:1px solid #9aa3b2;background:#fff;border-radius:6px;padding:4px 12px;
cursor:pointer;margin-right:6px}.filter button.on{background:#1d2330;color:#fff}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:16px;
margin-top:16px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:10px;overflow:hidden}
.card video,.card .none{width:100%;aspect-ratio:16/9;background:#222;display:block}
.card .none{display:flex;align-items:center;justify-content:center;color:#ccc}
.card .meta{padding:10px 12px}.card .id{font-weight:600;word-break:break-all}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;color:#fff;
background:#6b7280}.badge.delivered{background:#15803d}.badge.failed{background:#b91c1c}
.badge.cancelled{background:#a16207}.prompt{color:#374151;margin:6px 0}
.err{color:#b91c1c;word-break:break-word}.warn{color:#a16207;font-size:12px}.small{color:#5b6474;font-size:12px}
.card > .small{padding:4px 12px 0}
body.only-failed .card:not(.failed){display:none}
"""

JS = """
function show(which){
  document.body.classList.toggle('only-failed', which === 'failed');
  for (const b of document.querySelectorAll('.filter button'))
    b.classList.toggle('on', b.dataset.show === which);
  history.replaceState(null, '', which === 'failed' ? '#failed' : '#');
}
if (location.hash === '#failed') show('failed');
"""


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC" if ts else "-"


def _num(value: float | int | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _card(row: ReportRow, media: Media | None) -> str:
    e = escape
    if media is not None:
        poster = (
            f' poster="data:image/jpeg;base64,{base64.b64encode(media.poster_jpeg).decode()}"'
            if media.poster_jpeg
            else ""
        )
        player = (
            f'<video controls preload="none"{poster} src="{e(media.url)}"></video>'
            f'<div class="small"><a href="{e(media.url)}">open the video</a></div>'
        )
    else:
        player = f'<div class="none">{e(row.status)}</div>'
    timings = " · ".join(
        f"{name.removesuffix('_at')} {_fmt_time(getattr(row, name))}"
        for name in ("created_at", "submitted_at", "generated_at", "delivered_at")
        if getattr(row, name)
    )
    error = f'<div class="err">{e(row.error)}</div>' if row.error else ""
    warnings = "".join(f'<div class="warn">warning: {e(w)}</div>' for w in row.warnings)
    classes = "card failed" if row.failed else "card"
    return (
        f'<div class="{classes}" data-status="{e(row.status)}">{player}<div class="meta">'
        f'<div class="id">{e(row.id)} <span class="badge {e(row.status)}">{e(row.status)}'
        f'</span></div><div class="prompt">{e(row.prompt)}</div>'
        f'<div class="small">{e(row.output_uri or row.output_key)}</div>'
        f'<div class="small">generation {e(row.generation_id or "-")} · '
        f"{e(_num(row.output_s, ' s'))} · {e(_num(row.size_bytes, ' B'))} · "
        f"estimated {e(_num(row.cost))} · billed {e(_billed(row))}</div>"
        f'<div class="small">{e(timings)}</div>{warnings}{error}</div></div>'
    )


def _billed(row: ReportRow) -> str:
    if row.billed_cost is not None:
        return _num(row.billed_cost)
    return {"pending": "pending", "unknown": "unknown"}.get(row.billed_status, "-")


def render_html(
    info: RunInfo, rows: list[ReportRow], totals: Totals, media: dict[str, Media]
) -> str:
    """The page (pure: posters and links are given)."""
    e = escape
    states = ", ".join(f"{n} {s}" for s, n in sorted(totals.by_state.items())) or "no jobs"
    boxes = [
        ("jobs", str(totals.jobs)),
        ("by state", states),
        ("estimated", f"{totals.spend:g}"),
        ("billed", billed_summary(totals)),
        ("with warnings", str(totals.warned)),
        ("output seconds", f"{totals.output_s:g}"),
        ("wall time", "-" if totals.wall_s is None else f"{totals.wall_s:.1f} s"),
    ]
    failed = totals.by_state.get("failed", 0)
    cards = "\n".join(_card(row, media.get(row.id)) for row in rows)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>seedq report {e(info.id)}</title><style>{CSS}</style></head>
<body>
<h1>Run {e(info.id)}: {e(info.name)}</h1>
<div class="sub">status {e(info.shown_status)}
 · created {e(_fmt_time(info.created_at))}</div>
<div class="totals">{"".join(f"<div>{e(k)}<b>{e(v)}</b></div>" for k, v in boxes)}</div>
<div class="filter"><button class="on" data-show="all" onclick="show('all')">show all</button>
<button data-show="failed" onclick="show('failed')">only failed ({failed})</button></div>
<div class="gallery" id="gallery">
{cards}
</div>
<script>{JS}</script>
</body></html>
"""

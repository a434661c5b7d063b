"""The values the job store hands out: a run's summary (:class:`RunInfo`), a move's
outcome (:class:`Moved`), a registration's decisions, what the exporter reads
(:class:`QueueSnapshot`), :func:`decoded`, which turns what redis-py answers into
text, and a job hash's stored form (:func:`compacted`, :func:`unpacked`). Plain data, no
Redis: modules that only read these import them without the store.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Tallies in a run's hash, each counted by the move that makes it (``count=...``).
STUCK_RETRIES = "stuck_retries"  # jobs whose stuck generation was killed and retried
STUCK_FAILURES = "stuck_failures"  # jobs failed because the retry got stuck too

# The steps whose failures a job counts (worker.runner): ``{step}_attempts`` and
# ``{step}_first_failure_at``, cleared when the step's move forward succeeds.
RETRIED_STEPS = ("submit", "track", "deliver")


def failure_fields(*steps: str) -> list[str]:
    """The job fields that count these steps' failures (all steps when none named)."""
    return [f"{step}_{what}" for step in steps or RETRIED_STEPS for what in _FAILURE_PARTS]


_FAILURE_PARTS = ("attempts", "first_failure_at")


@dataclass(frozen=True, slots=True)
class Moved:
    """Outcome of a transition: ``ok`` when it happened; ``before`` is the prior state."""

    ok: bool
    verdict: str
    before: str


class Decision(StrEnum):
    NEW = "new"
    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    CHANGED = "changed"


@dataclass(slots=True)
class RegisterResult:
    """How many jobs each decision got; ``to_enqueue`` are the ids to send tasks for."""

    counts: dict[Decision, int] = field(default_factory=lambda: {d: 0 for d in Decision})
    to_enqueue: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: str
    name: str
    created_at: float
    status: str
    total: int
    counts: dict[str, int]
    meta: dict[str, Any]
    reason: str = ""  # why the run is paused, for the operator
    # Jobs whose generation was killed and retried for being stuck, and those that then
    # failed for being stuck again (tallied by the moves themselves: ``count``).
    stuck_retries: int = 0
    stuck_failures: int = 0

    @property
    def shown_status(self) -> str:
        """The status for people: ``finished`` once an active run has no job left to end
        (the stored status stays ``active``, so ``seedq retry`` can re-drive it), with
        the reason when there is one."""
        status = self.status
        ended = sum(self.counts.get(s, 0) for s in ("delivered", "failed", "cancelled"))
        if status == "active" and self.total and ended >= self.total:
            status = "finished"
        return f"{status} ({self.reason})" if self.reason else status


@dataclass(frozen=True, slots=True)
class RunGauges:
    """One recent run as the exporter reads it (``JobStore.queue_snapshot``): its jobs
    by state (the run's counters), its waiting queue's length and its money."""

    run_id: str
    name: str
    status: str
    counts: dict[str, int]
    waiting: int  # jobs registered and not yet admitted
    spent: float = 0.0
    reserved: float = 0.0
    cap: float | None = None  # the run's budget; None: no cap


@dataclass(frozen=True, slots=True)
class WaitingRun:
    """A run in admission's set (it has waiting jobs), whatever its status."""

    run_id: str
    name: str
    status: str
    waiting: int
    # ``updated_at`` (seconds) of the job at the head of its queue, the next to be
    # admitted: when it last changed state. None: no head (emptied meanwhile).
    head_since: float | None = None


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """What ``seedq exporter`` serves, as read in a few round trips (seedq.gauges)."""

    in_flight: int  # jobs holding an in-flight slot
    runs: list[RunGauges]  # the most recent runs, oldest first
    offered: list[WaitingRun]  # the runs in admission's set


def decoded(value: Any) -> str:
    """A value read from Redis as text (redis-py answers bytes unless told otherwise);
    a missing one (None) reads as ``""``."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def new_run_id() -> str:
    """Sortable by creation time, unique without coordination."""
    return time.strftime("r%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


# Job priorities run from -1000 to 1000 (producer.jobs); the sequence, below
# a billion keeps first in, first out among equal priorities.
PRIORITY_SPAN = 1000
SEQUENCE_SPAN = 1e9


def waiting_score(priority: int, sequence: int) -> float:
    """A job's score in its run's waiting queue: higher priority first, then first in
    (``sequence``: ``keys.SEQUENCE`` at registration; 0 puts it at the head of its
    priority). The store's register script (seedq/lua/register.lua) computes the same
    (a test checks)."""
    return (PRIORITY_SPAN - priority) * SEQUENCE_SPAN + sequence


# -- a job hash as stored ----------------------------------------------------------------

# Spec entries stored elsewhere in the hash: the id is its key, the fingerprint a field of
# its own (register.lua compares it). Left out of the spec at registration.
SPEC_COPIES = ("id", "fingerprint")
# What a delivered job's hash keeps no use for once its run is archived: the pipeline's
# own bookkeeping (the presigned result link has expired anyway). What the reports, the
# audit and re-registration read stays (docs/architecture.md, "Redis keys"), and so do
# the times of its path (admitted, sent, submitted, generated: how long it waited where).
COMPACT_DROP_FIELDS = (
    "result_url",
    "updated_at",
    "send_settled",
    "reconciled",
    "reserved_cost",
    "est_cost",
    "reconcile_pass",
    "billing_looks",
    "billing_by_id",
    "billed_parts",
    "billed_at",  # written with the bill, read by nothing
)
# And the spec's: its copies, and the estimate and priority only admission reads.
COMPACT_DROP_SPEC = (*SPEC_COPIES, "est_cost", "priority")

# Redis keeps a hash in its compact listpack encoding only while every value is at most
# ``hash-max-listpack-value`` bytes, 64 unless configured: one longer value makes it a
# hash table for good, about twice the memory for the same fields.
LISTPACK_VALUE_BYTES = 64
# The fields of a delivered job that run long (the prompt inside the spec and
# ``sent_params``, URLs, messages). Compaction packs them, deflated, into pieces that
# fit the listpack: ``packed:0``, ``packed:1``... Scripts never read them from a
# compacted job (transition.lua reads ``warnings`` only after the move that sets them);
# none of them is cleared after delivery, and one written again wins over its packed copy.
PACKED_FIELDS = ("spec", "sent_params", "output_uri", "warnings", "error", "last_error")
PACKED_PREFIX = "packed:"
# Deflate's preset dictionary: what every packed record repeats (its names, the model's
# parameters and usual values), so that a record of a few hundred bytes deflates well.
# FROZEN: every packed record in Redis needs these very bytes to be read (zlib's header
# names them by their Adler-32; a test pins it). A better one is added beside it, never
# written over it.
PACK_DICTIONARY = (
    b'{"error":"","last_error":"","output_uri":"s3://.mp4","sent_params":{"aspect_ratio":'
    b'"adaptive","duration":5,"generate_audio":false,"input_image":"https://",'
    b'"input_image_has_face":false,"prompt":"","resolution":"720p","tail_image_url":'
    b'"https://","tail_image_url_has_face":false,"watermark":false},"spec":{"line":,'
    b'"model":"bytedance-seedance-2-0-image-to-video","output_key":".mp4","params":'
    b'{"aspect_ratio":"adaptive","duration":5,"generate_audio":true,"input_image":"",'
    b'"input_image_has_face":false,"prompt":"","resolution":"480p","tail_image_url":"",'
    b'"tail_image_url_has_face":false,"watermark":false},"source":".csv"},"warnings":[]}'
)


def stored_spec(spec: Mapping[str, Any]) -> str:
    """A job's spec as registered in its hash: without :data:`SPEC_COPIES`."""
    return _json({k: v for k, v in spec.items() if k not in SPEC_COPIES})


def compacted(record: Mapping[str, str]) -> dict[str, str | bytes]:
    """A delivered job's record (as :func:`unpacked` reads it) as compaction stores it:
    without :data:`COMPACT_DROP_FIELDS`, a spec without :data:`COMPACT_DROP_SPEC`, and
    :data:`PACKED_FIELDS` packed. Every value fits the default listpack limit unless a
    field outside those runs long (a generation id of more than 64 characters)."""
    kept = {k: v for k, v in record.items() if k not in COMPACT_DROP_FIELDS}
    if "spec" in kept:
        kept["spec"] = _without(kept["spec"], COMPACT_DROP_SPEC)
    cold = {name: kept.pop(name) for name in PACKED_FIELDS if name in kept}
    return {**kept, **_packed(cold)} if cold else dict(kept)


def unpacked(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A job's hash as redis-py answers it, as text, its packed fields unpacked: what
    every reader of a job gets, compacted or not."""
    pieces: dict[int, bytes] = {}
    record: dict[str, str] = {}
    for name, value in raw.items():
        text = decoded(name)
        if text.startswith(PACKED_PREFIX):
            pieces[int(text.removeprefix(PACKED_PREFIX))] = _bytes(value)
        else:
            record[text] = decoded(value)
    if not pieces:
        return record
    return {**_unpack(b"".join(pieces[i] for i in sorted(pieces))), **record}


def _packed(fields: Mapping[str, str]) -> dict[str, bytes]:
    # JSON texts nest as JSON, not as strings: nothing escaped twice, less to deflate.
    doc = {name: _nested(text) for name, text in fields.items()}
    deflate = zlib.compressobj(9, zdict=PACK_DICTIONARY)
    blob = deflate.compress(_json(doc).encode("utf-8")) + deflate.flush()
    size = LISTPACK_VALUE_BYTES
    return {f"{PACKED_PREFIX}{i // size}": blob[i : i + size] for i in range(0, len(blob), size)}


def _unpack(blob: bytes) -> dict[str, str]:
    inflate = zlib.decompressobj(zdict=PACK_DICTIONARY)
    doc = json.loads((inflate.decompress(blob) + inflate.flush()).decode("utf-8"))
    return {name: v if isinstance(v, str) else _json(v) for name, v in doc.items()}


def _nested(text: str) -> Any:
    """The JSON object or list this text holds, or the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict | list) else text


def _without(text: str, names: tuple[str, ...]) -> str:
    """A spec without these entries; unreadable, it is kept as it is."""
    spec = _nested(text)
    if not isinstance(spec, dict):
        return text
    return _json({k: v for k, v in spec.items() if k not in names})


# Built once: json.dumps with options builds an encoder per call (once a job here).
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")

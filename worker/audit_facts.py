"""What the audit reads, as plain values: a job's record (:class:`JobFacts`, parsed from
its hash by :func:`job_facts`, unreadable fields read as unknown) and a delivered job's
stored objects (:class:`OutputFacts`). ``worker.auditor`` gathers them; the rules in
``worker.audit_rules`` and ``worker.ownership`` decide on them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.base import StoredObject

DELIVERED = "delivered"
SUBMITTING = "submitting"
IN_FLIGHT = frozenset({"submitted", "generated"})


@dataclass(frozen=True, slots=True)
class JobFacts:
    """A job as the audit reads its record."""

    id: str
    state: str
    model: str
    output_key: str
    created_at: float
    generation_id: str | None = None
    sent_params: dict[str, Any] | None = None  # None: never sent
    size_bytes: int | None = None
    sha256: str | None = None
    output_uri: str = ""  # where the delivery stored it
    billed_cost: float | None = None  # what the run recorded as charged; None: not known
    stuck_generation_id: str | None = None  # killed and retried: charged to this job too

    @property
    def owned(self) -> tuple[str, ...]:
        """The generations charged to this job: the stuck one it retried, and its own."""
        return tuple(g for g in (self.stuck_generation_id, self.generation_id) if g)


def job_facts(job_id: str, raw: Mapping[str, str]) -> JobFacts:
    """A job's hash as the audit reads it; unreadable fields read as unknown."""
    spec = _json(raw.get("spec"))
    sent = _json(raw.get("sent_params")) if raw.get("sent_params") else None
    return JobFacts(
        id=job_id,
        state=raw.get("state", ""),
        model=str(spec.get("model", "")),
        output_key=str(spec.get("output_key", "")),
        created_at=_number(raw.get("created_at")) or 0.0,
        generation_id=raw.get("generation_id") or None,
        sent_params=sent,
        size_bytes=_int(raw.get("size_bytes")),
        sha256=raw.get("sha256") or None,
        output_uri=raw.get("output_uri", ""),
        billed_cost=_number(raw.get("billed_cost")),
        stuck_generation_id=raw.get("stuck_generation_id") or None,
    )


def _json(text: str | None) -> dict[str, Any]:
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is None or math.isfinite(value) else None


def _int(text: str | None) -> int | None:
    value = _number(text)
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class OutputFacts:
    """A delivered job's stored objects; ``invalid`` is a failed PyAV check (--verify);
    ``uri`` is where the configured store keeps the job's key."""

    video: StoredObject | None
    sidecar: dict[str, Any] | None
    invalid: str | None = None
    uri: str = ""

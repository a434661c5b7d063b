"""What the audit reports: the kinds of disagreement it finds (:class:`Kind`), what
``--repair`` does about each (:class:`Repair`), and the :class:`Finding` rows that
``seedq audit`` prints. Plain values; the rules that make them are in
``worker.audit_rules``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What is wrong."""

    PAID_NOT_DELIVERED = "paid_not_delivered"
    MISSING_OUTPUT = "missing_output"
    MISSING_SIDECAR = "missing_sidecar"
    OUTPUT_MISMATCH = "output_mismatch"
    INVALID_OUTPUT = "invalid_output"
    DUPLICATE_GENERATION = "duplicate_generation"
    SHARED_GENERATION = "shared_generation"
    DUPLICATE_OUTPUT = "duplicate_output"
    BILLED_MISMATCH = "billed_mismatch"


class Repair(StrEnum):
    """What ``--repair`` does about a finding."""

    DELIVER = "deliver"  # adopt the paid generation into the job and deliver it
    REDELIVER = "redeliver"  # deliver the job's generation again, if still downloadable
    NONE = "none"  # nothing to undo (paid twice) or an operator must decide


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    job_id: str
    generation_id: str
    reason: str
    repair: Repair = Repair.NONE
    recorded: float | None = None  # billed_mismatch: the run's recorded billed total
    reported: float | None = None  # billed_mismatch: the provider's for the same generations

    def as_dict(self) -> dict[str, str | float]:
        row: dict[str, str | float] = {
            "kind": str(self.kind),
            "job_id": self.job_id,
            "generation_id": self.generation_id,
            "reason": self.reason,
            "repair": str(self.repair),
        }
        if self.recorded is not None:
            row["recorded_billed"] = self.recorded
        if self.reported is not None:
            row["provider_billed"] = self.reported
        return row

"""The job record as the pipeline's steps read it (:class:`Job`), and what a step tells
its task to do with the job next (:class:`Next`). The steps themselves live in
``worker.submitting``, ``worker.tracking``, ``worker.delivery`` and ``worker.unsticking``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from seedq.contract import JobState


@dataclass(frozen=True, slots=True)
class Next:
    """The follow-up of a step: another task (maybe later), or nothing. ``failed`` is
    the reason when the step itself moved the job to ``failed`` (a generation that
    failed, one needing an operator): its task then ends in FAILURE (worker.runner)."""

    task: str | None = None
    countdown_s: float = 0.0
    failed: str = ""


DONE = Next()


@dataclass(frozen=True, slots=True)
class Job:
    """A job's hash, typed; only the fields steps need."""

    id: str
    run_id: str
    state: JobState
    spec: dict[str, Any]
    raw: dict[str, str]

    @classmethod
    def parse(cls, job_id: str, raw: dict[str, str]) -> Job | None:
        if not raw or "state" not in raw:
            return None
        return cls(
            job_id, raw.get("run_id", ""), JobState(raw["state"]), json.loads(raw["spec"]), raw
        )

    @property
    def model(self) -> str:
        return str(self.spec["model"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.spec["params"])

    @property
    def sent_params(self) -> dict[str, Any]:
        """The parameters exactly as sent (inputs replaced by fetchable URLs)."""
        sent = self.raw.get("sent_params")
        return json.loads(sent) if sent else self.params

    @property
    def output_key(self) -> str:
        return str(self.spec["output_key"])

    @property
    def generation_id(self) -> str | None:
        return self.raw.get("generation_id") or None

    def number(self, name: str, default: float = 0.0) -> float:
        try:
            return float(self.raw.get(name, default))
        except ValueError:
            return default

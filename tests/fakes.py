"""A Celery app that records what is sent instead of talking to a broker: enough of
the app for ``seedq.dispatch.celery_sender`` and for a task's ``app.send_task``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeApp:
    sent: list[tuple[str, dict[str, Any], float | None]] = field(default_factory=list)

    def send_task(
        self,
        name: str,
        kwargs: dict[str, Any] | None = None,
        countdown: float | None = None,
        **_: Any,
    ) -> None:
        self.sent.append((name, dict(kwargs or {}), countdown))

    @contextmanager
    def producer_or_acquire(self) -> Iterator[None]:
        yield None

    def jobs(self) -> list[tuple[str, str]]:
        """(task, job id) of every message sent, in order."""
        return [(name, kwargs["job_id"]) for name, kwargs, _ in self.sent]

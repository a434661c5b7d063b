"""What seedq asks of a provider, as protocols: the runtime, run control and the audit
take these, so a test passes a fake and nothing above this layer names the client.

``Pages`` is a walk over the history, ``Reader`` every call that only reads, and
``Provider`` everything the pipeline calls. ``provider.client.OxenClient`` is the
implementation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from provider.models import (
    BilledGeneration,
    CompletionEvent,
    EnqueuedGeneration,
    Generation,
    GenerationList,
    GenerationPage,
)
from seedq.modelinfo import ModelInfo

# Pages of GET /api/ai/generations: the provider's default size, and the documented
# largest, which a walk over the history uses (the fewest calls per walk).
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class Pages(Protocol):
    """Pages of the account's history (a walk back in time needs no more)."""

    def history(
        self,
        *,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        model: str | None = None,
        status: str | None = None,
    ) -> GenerationPage: ...


class Reader(Pages, Protocol):
    """The provider's read-only calls."""

    def get(self, generation_id: str) -> Generation: ...

    def list(self, *, model: str | None = None, status: str | None = None) -> GenerationList: ...

    def billed(self, generation_id: str) -> BilledGeneration: ...


class Canceller(Protocol):
    """What run control asks of the provider when a run is cancelled."""

    def cancel(self, generation_id: str) -> None: ...


class Provider(Reader, Canceller, Protocol):
    """Every call the pipeline makes."""

    def enqueue(self, model: str, params: Mapping[str, Any]) -> list[EnqueuedGeneration]: ...

    def retry(self, generation_id: str) -> EnqueuedGeneration: ...

    def model(self, model_id: str) -> ModelInfo: ...

    def events(self, *, stop: threading.Event | None = None) -> Iterator[CompletionEvent]: ...

    def download(
        self, url: str, dest: Path, *, max_bytes: int, timeout_s: float | None = None
    ) -> int: ...

    def close(self) -> None: ...

"""Which parameter schema and pricing a model has: the live copy when the provider can
be asked, the copy shipped with seedq otherwise.

The live fetch is passed in (:func:`provider.catalog.catalog_for` builds it from the
client), so this module knows no HTTP.

A live model object that cannot be used is never used in part: seedq falls back to its
shipped copy for that model and says so loudly (:attr:`ModelCatalog.warnings`), naming
the field and the reason, since validating against a stale schema and pricing with stale
prices is a real risk that the operator must see before paying.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from seedq.errors import SeedqError
from seedq.modelinfo import ModelInfo, load_shipped_model

LiveFetch = Callable[[str], ModelInfo]


class Origin(StrEnum):
    PROVIDER = "the provider"
    SHIPPED = "the copy shipped with seedq"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where one model's schema and prices came from, and why not live when it was not."""

    model_id: str
    origin: Origin
    problem: str | None = None  # the live object's failure, when a key was set


def live_problem(exc: Exception) -> str:
    """A one-line reason for a failed live fetch; seedq's own errors carry a safe message
    (the client strips secrets), anything else only its type."""
    if isinstance(exc, SeedqError):
        return str(exc)
    return f"{type(exc).__name__} while fetching it"


@dataclass(slots=True)
class ModelCatalog:
    """Resolves model ids once per command; :attr:`sources` says where each came from."""

    live: LiveFetch | None = None
    sources: dict[str, ModelSource] = field(default_factory=dict)
    _cache: dict[str, ModelInfo] = field(default_factory=dict)

    def __call__(self, model_id: str) -> ModelInfo:
        found = self._cache.get(model_id)
        if found is None:
            found = self._resolve(model_id)
            self._cache[model_id] = found
        return found

    def _resolve(self, model_id: str) -> ModelInfo:
        problem: str | None = None
        if self.live is not None:
            try:
                info = self.live(model_id)
            except Exception as exc:  # any failure of the live copy falls back, loudly
                problem = live_problem(exc)
            else:
                problem = info.unusable_because()
                if problem is None:
                    self.sources[model_id] = ModelSource(model_id, Origin.PROVIDER)
                    return info
        info = load_shipped_model(model_id)  # UnknownModelError names the known ones
        self.sources[model_id] = ModelSource(model_id, Origin.SHIPPED, problem)
        return info

    @property
    def notes(self) -> list[str]:
        """One line per model: where its schema and prices came from."""
        return [f"{s.model_id}: schema and pricing from {s.origin}" for s in self.sources.values()]

    @property
    def warnings(self) -> list[str]:
        """One loud line per model whose live object could not be used."""
        return [
            f"the provider's model object for {s.model_id} cannot be used ({s.problem}); "
            "validating and pricing with the copy shipped with seedq, which may be stale"
            for s in self.sources.values()
            if s.problem is not None
        ]

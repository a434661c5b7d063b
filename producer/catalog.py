"""Which parameter schema and pricing a model has: the live copy when the provider can
be asked, the copy shipped with seedq otherwise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from seedq.modelinfo import ModelInfo, UnknownModelError, load_shipped_model
from seedq.settings import Settings

LiveFetch = Callable[[str], ModelInfo]


@dataclass(slots=True)
class ModelCatalog:
    """Resolves model ids once per command; ``notes`` says where each schema came from."""

    live: LiveFetch | None = None
    notes: list[str] = field(default_factory=list)
    _cache: dict[str, ModelInfo] = field(default_factory=dict)

    def __call__(self, model_id: str) -> ModelInfo:
        found = self._cache.get(model_id)
        if found is None:
            found = self._resolve(model_id)
            self._cache[model_id] = found
        return found

    def _resolve(self, model_id: str) -> ModelInfo:
        if self.live is not None:
            try:
                info = self.live(model_id)
            except Exception as exc:
                self.notes.append(
                    f"{model_id}: live schema unavailable ({type(exc).__name__}); "
                    "using the shipped copy"
                )
            else:
                self.notes.append(f"{model_id}: schema and pricing from the provider")
                return info
        try:
            info = load_shipped_model(model_id)
        except UnknownModelError:
            raise
        if self.live is None:
            self.notes.append(f"{model_id}: schema and pricing from the copy shipped with seedq")
        return info


def catalog_for(settings: Settings, offline: bool = False) -> ModelCatalog:
    """The live schema when a key is set and the provider answers, else the shipped copy
    (``seedq validate`` and ``submit``, and scheduled runs on the workers)."""
    if offline or settings.oxen_api_key is None:
        return ModelCatalog()
    from worker.provider.client import OxenClient  # the producer needs it only here

    quick = settings.model_copy(update={"http_timeout_s": 5.0})

    def live(model_id: str) -> ModelInfo:
        with OxenClient.from_settings(quick) as client:
            return client.model(model_id)

    return ModelCatalog(live=live)

"""The model catalog wired to the live provider: the one place a catalog learns to fetch."""

from __future__ import annotations

from provider.client import OxenClient
from seedq.catalog import ModelCatalog
from seedq.modelinfo import ModelInfo
from seedq.settings import Settings


def catalog_for(settings: Settings, offline: bool = False) -> ModelCatalog:
    """The live schema when a key is set and the provider answers, else the shipped copy
    (``seedq validate`` and ``submit``, scheduled runs and delivery on the workers)."""
    if offline or settings.oxen_api_key is None:
        return ModelCatalog()
    quick = settings.model_copy(update={"http_timeout_s": 5.0})

    def live(model_id: str) -> ModelInfo:
        with OxenClient.from_settings(quick) as client:
            return client.model(model_id)

    return ModelCatalog(live=live)

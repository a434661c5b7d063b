"""What the provider returns, as tolerant pydantic models, and the one way to parse it.

Extra fields are kept (the service echoes parameters and may add fields at any time);
an unknown ``status`` string is kept as is rather than refused. A body that still does
not fit raises :class:`~provider.errors.MalformedResponse`, never a pydantic
traceback.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar, get_args

import pydantic
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from provider import errors as e
from provider.classify import classify_exception, decode_json

GenerationStatus = Literal["queued", "processing", "succeeded", "failed", "cancelled"]
KNOWN_STATUSES: frozenset[str] = frozenset(get_args(GenerationStatus))
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
COMPLETED_EVENT = "media_generation_completed"

# Fields of a generation object that describe the generation, not what was asked for.
_BOOKKEEPING = frozenset(
    {"generation_id", "model_name", "media_type", "status", "result_url", "error_message"}
    | {"enqueued_at", "started_at", "completed_at", "retried_from_id"}
    | {"target_namespace", "target_repo", "target_directory"}
    | {"cost", "user_id", "username", "user_image"}
)


def _unix_seconds(value: object) -> float | None:
    """Unix seconds from a number, a numeric string or an ISO date; None when unreadable.

    The contract says Unix seconds; a timestamp is informational, so a surprise format
    degrades to None instead of failing a whole status read.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
            return None
    return None


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Generation(_Tolerant):
    """One generation as ``GET /api/ai/queue/{id}`` returns it."""

    generation_id: str = Field(validation_alias=AliasChoices("generation_id", "id"))
    model_name: str | None = Field(
        default=None, validation_alias=AliasChoices("model_name", "model")
    )
    prompt: str | None = None
    media_type: str | None = None
    # GenerationStatus documents the expected values; str keeps a new one readable.
    status: GenerationStatus | str
    result_url: str | None = None
    error_message: str | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None

    @field_validator("enqueued_at", "started_at", "completed_at", mode="before")
    @classmethod
    def _timestamps(cls, value: object) -> float | None:
        return _unix_seconds(value)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_known_status(self) -> bool:
        return self.status in KNOWN_STATUSES

    def params(self) -> dict[str, Any]:
        """The echoed request parameters: the prompt plus every field not bookkeeping."""
        echoed = {k: v for k, v in (self.model_extra or {}).items() if k not in _BOOKKEEPING}
        return {"prompt": self.prompt, **echoed} if self.prompt is not None else echoed


def _decimal_or_none(value: object) -> float | None:
    """A charged amount (the API sends a decimal string) as a float; None when absent or
    unreadable: a billed figure is informational, never a reason to drop a row."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return amount if amount == amount and abs(amount) != float("inf") else None


class BilledGeneration(Generation):
    """A row of ``GET /api/ai/generations`` (and the ``generation`` of its ``/{id}``):
    the queue row plus ``cost``, what the provider charged (None before charging)."""

    cost: float | None = None

    @field_validator("cost", mode="before")
    @classmethod
    def _cost(cls, value: object) -> float | None:
        return _decimal_or_none(value)


class GenerationPage(_Tolerant):
    """One page of ``GET /api/ai/generations``: newest first, with the filter's totals."""

    generations: list[BilledGeneration] = Field(default_factory=list)
    page_number: int = 1
    page_size: int = 0
    total_pages: int = 0
    total_entries: int = 0
    total_cost: float | None = None

    @field_validator("total_cost", mode="before")
    @classmethod
    def _total(cls, value: object) -> float | None:
        return _decimal_or_none(value)

    @field_validator("page_number", "page_size", "total_pages", "total_entries", mode="before")
    @classmethod
    def _count(cls, value: object) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    @property
    def is_last(self) -> bool:
        """No page after this one (an empty or short page ends it too, whatever the
        totals say: they may change while a client pages)."""
        if not self.generations:
            return True
        if self.total_pages > 0:
            return self.page_number >= self.total_pages
        return self.page_size <= 0 or len(self.generations) < self.page_size


class EnqueuedGeneration(_Tolerant):
    """One entry of ``POST /api/ai/queue``'s ``generations`` list."""

    generation_id: str = Field(validation_alias=AliasChoices("generation_id", "id"))
    status: GenerationStatus | str = "queued"


class EnqueueResponse(_Tolerant):
    generations: list[EnqueuedGeneration] = Field(min_length=1)


class GenerationList(_Tolerant):
    """``GET /api/ai/queue``: ``count`` falls back to the list's length when missing."""

    count: int
    generations: list[Generation] = Field(default_factory=list)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _count_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("count") is None:
            generations = data.get("generations")
            return {**data, "count": len(generations) if isinstance(generations, list) else 0}
        return data


class GeneratedVideo(_Tolerant):
    url: str | None = None


class GeneratedVideos(_Tolerant):
    """``POST /api/ai/videos/generate``'s answer (``VideoGenerateResponse``): the videos
    made, each with its URL. An answer shaped as a queue row (older services) is read
    too: its ``result_url`` is the one video."""

    created: float | None = None
    model: str | None = None
    videos: list[GeneratedVideo] = Field(default_factory=list)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any) -> Any:
        if isinstance(data, dict) and "videos" not in data and data.get("result_url"):
            return {**data, "videos": [{"url": data["result_url"]}]}
        return data

    @property
    def url(self) -> str | None:
        """The first video's URL (one generation makes one video)."""
        return next((v.url for v in self.videos if v.url), None)


class CompletionEvent(_Tolerant):
    """The data of one ``media_generation_completed`` server-sent event."""

    generation_id: str
    status: GenerationStatus | str
    media_type: str | None = None
    model: str | None = None
    url: str | None = None
    error: str | None = None


M = TypeVar("M", bound=BaseModel)


def parse_json(body: bytes) -> Any:
    """The JSON value of a body the contract says is JSON; MalformedResponse otherwise."""
    data = decode_json(body)
    if data is None:
        raise e.MalformedResponse("expected a JSON body" + (", got none" if not body else ""))
    return data


def parse_model(model: type[M], data: Any) -> M:
    """``model`` validated from decoded JSON; any mismatch is a MalformedResponse."""
    try:
        return model.model_validate(data)
    except (pydantic.ValidationError, ValueError, TypeError, RecursionError) as exc:
        raise classify_exception(exc) from None

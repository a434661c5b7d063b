"""The account's past: ``--history N`` finished generations, so that listing and paging
behave as they do on a real account with a long history.

Rows are spread one every :data:`SPACING_S` back from a minute ago (100,000 span about
35 days), over the shipped models, with prompts no client sends (``past generation K``),
mostly succeeded and charged, some failed or cancelled. Seeded like everything else.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

from seedq.modelinfo import shipped_model_ids
from seedq.settings import DEFAULT_MODEL
from simulator.catalog import charge, served_model
from simulator.state import CANCELLED, FAILED, SUCCEEDED, Generation, Target

SPACING_S = 30
FAILED_EVERY, CANCELLED_EVERY = 20, 53
PAST_FAILURE = "Generation failed: the model could not produce a video"
RESOLUTIONS = ("480p", "720p")


def past_generations(
    count: int, *, now: int, rng: random.Random, price_factor: float
) -> Iterator[Generation]:
    """``count`` past generations, oldest first (the order they were enqueued in)."""
    models = sorted(shipped_model_ids(), key=lambda m: m != DEFAULT_MODEL)  # default first
    served = {m: served_model(m, price_factor) for m in models}
    newest = now - 60
    for k in range(count):
        at = newest - (count - 1 - k) * SPACING_S
        model = models[k % 7 % len(models)]  # uneven: the default model is the busiest
        seconds = 4 + k % 7
        params: dict[str, object] = {
            "prompt": f"past generation {k}",
            "input_image": f"https://inputs.example/past/{k}.png",
            "duration": seconds,
            "resolution": RESOLUTIONS[k % 3 % 2],
        }
        status = SUCCEEDED
        if k % FAILED_EVERY == FAILED_EVERY - 1:
            status = FAILED
        elif k % CANCELLED_EVERY == CANCELLED_EVERY - 1:
            status = CANCELLED
        yield Generation.from_history(
            generation_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            model=model,
            params=params,
            seq=-1 - k,
            enqueued_at=at,
            target=Target(),
            status=status,
            error_message=PAST_FAILURE if status == FAILED else None,
            started_at=at + 2,
            completed_at=min(at + (30 if status == CANCELLED else 300), now),  # all past
            cost=charge(served[model], params, seconds) if status == SUCCEEDED else None,
        )

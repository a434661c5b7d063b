"""``GET /api/events``: a Server-Sent Events broadcast with no buffering.

Each connected stream owns a queue registered when the request arrives (before the
response headers go out, so a client that has its headers is already subscribed).
:meth:`EventBus.publish` puts into the queues that exist right now: an event fired while
nobody listens is lost, as the contract says. Payloads are built per stream because the
completion URL is a presigned link on the host that stream's client used.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

COMPLETED = "media_generation_completed"
UNRELATED = "repo_updated"
KEEPALIVE = b": keep-alive\n\n"

PayloadBuilder = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class Event:
    name: str
    build: PayloadBuilder  # base URL of the stream -> the data object


def frame(name: str, data: dict[str, Any]) -> bytes:
    """One SSE frame: ``event:`` and a single-line JSON ``data:``."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def unrelated_event(rng: random.Random) -> Event:
    """Noise a client must ignore: the real stream carries other event types."""
    payload = {"repo": f"sim/repo-{rng.randrange(100)}", "action": "commit"}
    return Event(UNRELATED, lambda _base: payload)


class EventBus:
    """Subscribers' queues; ``None`` in a queue closes that stream."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event | None]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[Event | None]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        self._queues.discard(queue)

    def publish(self, event: Event) -> int:
        """Deliver to the current subscribers; returns how many got it."""
        for queue in self._queues:
            queue.put_nowait(event)
        return len(self._queues)

    def close_all(self) -> None:
        for queue in self._queues:
            queue.put_nowait(None)


async def stream(
    bus: EventBus,
    queue: asyncio.Queue[Event | None],
    base_url: str,
    keepalive_s: Callable[[], float],
    noise: Callable[[], Event | None],
) -> AsyncIterator[bytes]:
    """The body of one SSE response; ``noise`` may add an unrelated event after a keep-alive."""
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=keepalive_s())
            except TimeoutError:
                yield KEEPALIVE
                extra = noise()
                if extra is not None:
                    yield frame(extra.name, extra.build(base_url))
                continue
            if event is None:
                return
            yield frame(event.name, event.build(base_url))
    finally:
        bus.unsubscribe(queue)

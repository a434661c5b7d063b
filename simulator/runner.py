"""The simulated service: enqueue, FIFO scheduling under a concurrency cap, the run of a
generation (validation, content filter, fetch, render), cancellation and completion events.

Lifecycle: ``queued`` -> ``processing`` -> ``succeeded`` | ``failed``, or ``cancelled``
from either active state. At most ``max_concurrency`` generations are ``processing``;
the others wait ``queued`` and start in enqueue order. A run takes at least a latency
drawn from ``latency_s`` (rendering counts towards it). Parameters are checked only when
the run starts, as documented; a problem ends the generation ``failed``.

All of it runs on the server's event loop; rendering goes to a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
import uuid
from typing import Any

import httpx

from seedq.modelinfo import AUTO_DURATION, check_params
from simulator.catalog import charge, served_model
from simulator.config import SimConfig, updated_config
from simulator.errors import ApiError, GenerationFailed
from simulator.events import COMPLETED, Event, EventBus, unrelated_event
from simulator.files import result_url
from simulator.history import past_generations
from simulator.inputs import content_filter_reason, fetch_image
from simulator.render import (
    VideoSpec,
    chosen_duration_s,
    decode_image,
    output_size,
    render_video,
    synthetic_image,
)
from simulator.state import (
    ACTIVE,
    CANCELLED,
    FAILED,
    PROCESSING,
    SUCCEEDED,
    Generation,
    Store,
    Target,
)

INSUFFICIENT_CREDITS = "Insufficient credits"
SIMULATED_FAILURE = "Generation failed: the model could not produce a video (simulated failure)"
FAST_IMAGE_SIZE = (1280, 720)
SCHEDULER_TICK_S = 0.05
ClipKey = tuple[str, str, int, bool, bool]


def _seeded(seed: int | None, purpose: str) -> random.Random:
    # bandit B311: the simulator's made-up latencies and failures, not secrets.
    return random.Random(f"{seed}:{purpose}") if seed is not None else random.Random()  # nosec B311


def video_spec(
    params: dict[str, Any], defaults: dict[str, Any], size: tuple[int, int], fps: int
) -> VideoSpec:
    """The render plan of valid parameters, with the schema's defaults filled in."""
    merged = {**defaults, **params}
    duration = int(merged.get("duration", AUTO_DURATION))
    if duration == AUTO_DURATION:
        duration = chosen_duration_s(params)
    width, height = output_size(str(merged["resolution"]), str(merged["aspect_ratio"]), *size)
    return VideoSpec(
        width=width,
        height=height,
        duration_s=duration,
        fps=fps,
        generate_audio=bool(merged.get("generate_audio", False)),
        watermark=bool(merged.get("watermark", False)),
    )


class SimCore:
    """The state of one simulated service and everything that changes it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.store = Store()
        self.bus = EventBus()
        self._reseed()
        self._load_history()
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._clips: dict[ClipKey, bytes] = {}
        self._clip_locks: dict[ClipKey, asyncio.Lock] = {}

    def _reseed(self) -> None:
        seed = self.config.seed
        self.fault_rng = _seeded(seed, "faults")
        self.noise_rng = _seeded(seed, "noise")
        self._id_rng = _seeded(seed, "ids")
        self.secret = (
            hashlib.sha256(f"{seed}:secret".encode()).digest()
            if seed is not None
            else os.urandom(32)
        )

    async def start(self) -> None:
        self._http = httpx.AsyncClient(follow_redirects=True)
        self._scheduler = asyncio.create_task(self._schedule_loop())

    async def stop(self) -> None:
        self.bus.close_all()
        for gen in self.store.generations.values():
            if gen.task is not None:
                gen.task.cancel()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        if self._http is not None:
            await self._http.aclose()

    def configure(self, changes: dict[str, Any]) -> SimConfig:
        self.config = updated_config(self.config, changes)
        self._wake.set()  # a larger max_concurrency may start queued generations
        return self.config

    def reset(self) -> None:
        """Forget every generation and counter (tests); subscribers stay connected."""
        for gen in self.store.generations.values():
            if gen.task is not None:
                gen.task.cancel()
        self.store = Store()
        self._reseed()
        self._load_history()

    def stats(self) -> dict[str, Any]:
        return self.store.stats(self.bus.subscribers)

    def _load_history(self) -> None:
        """The account's past (``config.history`` rows): listed, never counted as work."""
        rng = _seeded(self.config.seed, "history")
        for gen in past_generations(
            self.config.history,
            now=int(time.time()),
            rng=rng,
            price_factor=self.config.price_factor,
        ):
            self.store.add_past(gen)

    # --- enqueue, cancel -------------------------------------------------------------

    def create(
        self,
        model: str,
        params: dict[str, Any],
        target: Target,
        *,
        retried_from_id: str | None = None,
    ) -> Generation:
        seq = self.store.generations_created
        gen = Generation(
            generation_id=str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4)),
            model=model,
            params=params,
            seq=seq,
            enqueued_at=int(time.time()),
            target=target,
            retried_from_id=retried_from_id,
        )
        self.store.add(gen)
        self._wake.set()
        return gen

    def enqueue(
        self, model: str, params: dict[str, Any], target: Target, count: int
    ) -> list[Generation]:
        self.store.note_enqueue(model, params)
        return [self.create(model, params, target) for _ in range(count)]

    def cancel(self, gen: Generation) -> None:
        """Cancel an active generation; a finished one is left as it is. No event fires."""
        if gen.status not in ACTIVE:
            return
        if gen.task is not None:
            gen.task.cancel()
        self.store.set_status(gen, CANCELLED)
        gen.completed_at = int(time.time())
        gen.done.set()
        self._wake.set()

    def retry(self, gen: Generation) -> Generation:
        """Kill and retry (API 0.257): cancel ``gen`` if it is still active and enqueue a
        fresh generation with the same parameters, linked back by ``retried_from_id``.
        A generation that succeeded cannot be retried (its video exists, and is paid)."""
        if gen.status == SUCCEEDED:
            raise ApiError(
                409,
                "invalid_params",
                "Cannot retry",
                f"Generation {gen.generation_id} already succeeded and cannot be retried",
            )
        self.cancel(gen)
        self.store.retried += 1
        return self.create(gen.model, gen.params, gen.target, retried_from_id=gen.generation_id)

    def url_for(self, gen: Generation, base_url: str) -> str | None:
        """A fresh presigned link (each call extends the expiry), for succeeded only."""
        if gen.status != SUCCEEDED:
            return None
        return result_url(
            base_url, self.secret, gen.generation_id, time.time() + self.config.url_ttl_s
        )

    # --- scheduling and runs ---------------------------------------------------------

    async def _schedule_loop(self) -> None:
        # The tick is a safety net; enqueue, cancel, completion and configure all wake it.
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SCHEDULER_TICK_S)
            self._wake.clear()
            self._start_queued()

    def _start_queued(self) -> None:
        while self.store.processing_count() < self.config.max_concurrency:
            gen = self.store.next_queued()
            if gen is None:
                return
            self.store.set_status(gen, PROCESSING)
            gen.started_at = int(time.time())
            self.store.note_started()
            gen.task = asyncio.create_task(self._run(gen))

    async def _run(self, gen: Generation) -> None:
        rng = _seeded(self.config.seed, f"gen:{gen.seq}")
        latency_s, failure_draw = rng.uniform(*self.config.latency_s), rng.random()
        stuck_rate = self.config.stuck_retry_rate if gen.retried_from_id else self.config.stuck_rate
        if rng.random() < stuck_rate:
            # Stuck: processing until cancelled or retried (the task is cancelled then).
            await asyncio.Event().wait()
        began = time.monotonic()
        video: bytes | None = None
        error: str | None = None
        try:
            video = await self._work(gen, failure_draw)
        except GenerationFailed as exc:
            error = str(exc)
        except (OSError, ValueError, RuntimeError) as exc:  # a render or decode bug
            error = f"Internal error while rendering: {type(exc).__name__}: {exc}"
        remaining_s = latency_s - (time.monotonic() - began)
        if remaining_s > 0:
            await asyncio.sleep(remaining_s)
        if self.config.insufficient_credits:
            video, error = None, INSUFFICIENT_CREDITS
        self._finish(gen, video, error)

    async def _work(self, gen: Generation, failure_draw: float) -> bytes:
        model = served_model(gen.model, self.config.price_factor, self.config.model_patch)
        problems = check_params(model, gen.params)
        if problems:
            detail = "; ".join(f"{name} {why}" for name, why in sorted(problems.items()))
            raise GenerationFailed(f"Invalid parameters: {detail}")
        reason = content_filter_reason(gen.params)
        if reason:
            raise GenerationFailed(reason)
        if failure_draw < self.config.failure_rate:
            raise GenerationFailed(SIMULATED_FAILURE)
        defaults = {
            name: spec.get("default")
            for name, spec in model.properties.items()
            if "default" in spec
        }
        fps = self.config.fps
        planned = video_spec(gen.params, defaults, FAST_IMAGE_SIZE, fps)
        gen.cost = charge(model, gen.params, planned.duration_s)  # charged on success
        if self.config.fast:
            return await self._fast_clip(planned)
        # bandit B101: narrows the type: the client is opened before any generation runs.
        assert self._http is not None  # nosec B101
        start_bytes = await fetch_image(self._http, str(gen.params["input_image"]), "input_image")
        tail_url = gen.params.get("tail_image_url")
        tail_bytes = (
            await fetch_image(self._http, str(tail_url), "tail_image_url") if tail_url else None
        )
        return await asyncio.to_thread(
            _render_from_bytes, gen.params, defaults, fps, start_bytes, tail_bytes
        )

    async def _fast_clip(self, spec: VideoSpec) -> bytes:
        key: ClipKey = (
            f"{spec.width}x{spec.height}",
            "",
            spec.duration_s,
            spec.generate_audio,
            spec.watermark,
        )
        lock = self._clip_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._clips:
                image = synthetic_image(*FAST_IMAGE_SIZE)
                self._clips[key] = await asyncio.to_thread(render_video, spec, image)
        return self._clips[key]

    def _finish(self, gen: Generation, video: bytes | None, error: str | None) -> None:
        if gen.status != PROCESSING:  # cancelled meanwhile: no event, no change
            return
        gen.error_message, gen.video, gen.completed_at = error, video, int(time.time())
        gen.cost = None if error else gen.cost  # only a made video is charged
        self.store.set_status(gen, FAILED if error else SUCCEEDED)
        gen.done.set()
        self._wake.set()
        self._publish_completion(gen)

    def _publish_completion(self, gen: Generation) -> None:
        base = {"generation_id": gen.generation_id, "status": gen.status, "media_type": "video"}
        if gen.status == SUCCEEDED:

            def build(base_url: str) -> dict[str, Any]:
                return {**base, "model": gen.model, "url": self.url_for(gen, base_url)}

        else:
            error = gen.error_message

            def build(base_url: str) -> dict[str, Any]:
                return {**base, "error": error}

        if self.bus.publish(Event(COMPLETED, build)):
            self.store.events_sent[COMPLETED] += 1
        noise = self.draw_noise()
        if noise is not None:
            self.bus.publish(noise)

    def draw_noise(self) -> Event | None:
        """An unrelated event, at ``unrelated_event_rate`` (after a completion or keep-alive)."""
        if self.noise_rng.random() >= self.config.unrelated_event_rate:
            return None
        return unrelated_event(self.noise_rng)


def _render_from_bytes(
    params: dict[str, Any], defaults: dict[str, Any], fps: int, start: bytes, tail: bytes | None
) -> bytes:
    start_image = decode_image(start, "input_image")
    tail_image = decode_image(tail, "tail_image_url") if tail is not None else None
    spec = video_spec(params, defaults, start_image.size, fps)
    return render_video(spec, start_image, tail_image)

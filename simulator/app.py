"""The Starlette application: the provider's endpoints (docs/provider-api.md), the
presigned result files and the ``/_sim/*`` control endpoints; what every request passes
through first (counting, authentication, error bodies) is in :mod:`simulator.edge`.

Choices where the contract is silent (also in the README of the simulator's CLI help):
- Enqueue answers 200. An unknown model is 404 ``resource_not_found``; a body that is
  not a JSON object, a missing ``model`` or ``num_generations`` outside 1-12 (the
  OpenAPI's range) is 400 ``invalid_params``. Insufficient credits is **402** with
  ``{"error": {"message": "Insufficient credits"}}`` (the untyped documented shape; no
  type name is documented).
- ``POST /api/ai/videos/generate`` takes the enqueue body, answers 400 ``invalid_params``
  for schema problems, makes one generation (also visible through the queue endpoints)
  and answers 200 once it is finished, ``failed`` ones included: the published
  ``VideoGenerateResponse`` (``created``, ``model``, ``videos: [{url}]``, empty unless it
  succeeded) plus the generation's queue row (the schema allows more fields).
- The list is in enqueue order; an unknown ``status=`` value is 400 ``invalid_params``.
- ``GET /api/ai/generations``: newest first; ``page`` below 1 or ``page_size`` outside
  1-1000 is 400 ``invalid_params``.
- ``DELETE`` of a finished generation changes nothing and answers success too.
- ``POST /api/ai/queue/{id}/retry`` (API 0.257) answers the new generation's object with
  ``retried_from_id``; retrying a succeeded generation is 409 ``invalid_params``.
- Unknown routes are 404 ``resource_not_found``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from seedq.modelinfo import ModelInfo, UnknownModelError, check_params
from simulator.catalog import served_model, served_object
from simulator.config import SimConfig
from simulator.edge import EdgeMiddleware, api_error, http_error
from simulator.errors import ApiError, SimConfigError
from simulator.events import stream
from simulator.faults import FaultMiddleware
from simulator.files import FILES_PREFIX, LinkCheck, check_link
from simulator.runner import INSUFFICIENT_CREDITS, SimCore
from simulator.state import (
    DEFAULT_PAGE_SIZE,
    LIST_FILTERS,
    MAX_PAGE_SIZE,
    QUEUE_KEYS,
    STATUSES,
    Generation,
    Target,
    billed_object,
    generation_object,
    money,
)

MAX_GENERATIONS = 12
MODEL_TYPES = frozenset({"video", "image"})
DOWNLOAD_PIECE_S = 0.25  # a slow download (config download_s) sends a piece this often


def _core(request: Request) -> SimCore:
    core: SimCore = request.app.state.core
    return core


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _object(request: Request, gen: Generation) -> dict[str, Any]:
    return generation_object(gen, _core(request).url_for(gen, _base(request)))


def _invalid(detail: str) -> ApiError:
    return ApiError(400, "invalid_params", "Invalid parameters", detail)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise _invalid("The body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _invalid("The body must be a JSON object")
    return body


def _known_model(request: Request, model_id: str) -> ModelInfo:
    try:
        config = _core(request).config
        return served_model(model_id, config.price_factor, config.model_patch)
    except UnknownModelError:
        raise ApiError(
            404, "resource_not_found", "Not found", f"Unknown model {model_id}"
        ) from None


def _target(body: dict[str, Any]) -> Target:
    values = {k: body.get(k) for k in ("target_namespace", "target_repo", "target_directory")}
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            raise _invalid(f"{name} must be a string")
    return Target(values["target_namespace"], values["target_repo"], values["target_directory"])


async def _parse_enqueue(request: Request) -> tuple[str, dict[str, Any], Target, int]:
    """Model, model parameters, target and count: the checks documented for enqueue."""
    body = await _json_object(request)
    model_id = body.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise _invalid("model is required")
    model = _known_model(request, model_id)
    if not model.outputs & MODEL_TYPES:
        raise _invalid(f"Model {model_id} makes neither images nor videos")
    count = body.get("num_generations", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_GENERATIONS:
        raise _invalid(f"num_generations must be an integer from 1 to {MAX_GENERATIONS}")
    target = _target(body)
    if _core(request).config.insufficient_credits:
        raise ApiError(402, "", "", INSUFFICIENT_CREDITS)
    params = {k: v for k, v in body.items() if k not in QUEUE_KEYS}
    return model_id, params, target, count


async def enqueue(request: Request) -> Response:
    model_id, params, target, count = await _parse_enqueue(request)
    gens = _core(request).enqueue(model_id, params, target, count)
    return JSONResponse(
        {"generations": [{"generation_id": g.generation_id, "status": g.status} for g in gens]}
    )


async def generate_sync(request: Request) -> Response:
    model_id, params, target, _count = await _parse_enqueue(request)
    problems = check_params(_known_model(request, model_id), params)
    if problems:
        raise _invalid("; ".join(f"{name} {why}" for name, why in sorted(problems.items())))
    gen = _core(request).create(model_id, params, target)
    await gen.done.wait()
    row = _object(request, gen)
    videos = [{"url": row["result_url"]}] if row["result_url"] else []
    # The row (which seedq's client reads), then the published VideoGenerateResponse.
    return JSONResponse({**row, "created": gen.completed_at, "model": model_id, "videos": videos})


def _generation(request: Request) -> Generation:
    gen_id = request.path_params["generation_id"]
    gen = _core(request).store.generations.get(gen_id)
    if gen is None:
        raise ApiError(404, "resource_not_found", "Not found", f"No generation {gen_id}")
    return gen


async def get_generation(request: Request) -> Response:
    return JSONResponse(_object(request, _generation(request)))


async def cancel_generation(request: Request) -> Response:
    gen = _generation(request)
    _core(request).cancel(gen)
    return JSONResponse({"status": "success", "generation_id": gen.generation_id})


async def retry_generation(request: Request) -> Response:
    fresh = _core(request).retry(_generation(request))
    return JSONResponse(_object(request, fresh))


async def list_generations(request: Request) -> Response:
    filters = _filters(request)
    found = [_object(request, g) for g in _core(request).store.listed(filters)]
    return JSONResponse({"count": len(found), "generations": found})


def _filters(request: Request) -> dict[str, str]:
    filters = {k: v for k in LIST_FILTERS if (v := request.query_params.get(k))}
    if "status" in filters and filters["status"] not in STATUSES:
        raise _invalid("status must be one of " + ", ".join(sorted(STATUSES)))
    return filters


async def list_history(request: Request) -> Response:
    """``GET /api/ai/generations``: the account's generations, every status unless
    filtered, newest first, paginated, with ``cost`` per row and the filter's totals."""
    filters = _filters(request)
    page = _page_number(request, "page", 1, None)
    page_size = _page_number(request, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    core = _core(request)
    found = core.store.page(filters, page, page_size)
    base = _base(request)
    return JSONResponse(
        {
            "count": len(found.rows),
            "generations": [billed_object(g, core.url_for(g, base)) for g in found.rows],
            "page_number": page,
            "page_size": page_size,
            "total_entries": found.total_entries,
            "total_pages": -(-found.total_entries // page_size),
            "total_cost": money(found.total_cost) if found.total_cost is not None else None,
        }
    )


def _page_number(request: Request, name: str, default: int, maximum: int | None) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _invalid(f"{name} must be an integer") from None
    if value < 1 or (maximum is not None and value > maximum):
        bound = f"from 1 to {maximum}" if maximum is not None else "at least 1"
        raise _invalid(f"{name} must be {bound}")
    return value


async def get_billed(request: Request) -> Response:
    """``GET /api/ai/generations/{id}``: one row with its ``cost``, wrapped."""
    gen = _generation(request)
    row = billed_object(gen, _core(request).url_for(gen, _base(request)))
    return JSONResponse(
        {"status": "success", "status_message": "resource_found", "generation": row}
    )


async def get_model(request: Request) -> Response:
    """The published model object (``?deployment_status=live`` changes nothing here)."""
    model_id = request.path_params["model_id"]
    core = _core(request)
    try:
        body = served_object(model_id, core.config.price_factor, core.config.model_patch)
    except UnknownModelError:
        raise ApiError(
            404, "resource_not_found", "Not found", f"Unknown model {model_id}"
        ) from None
    if "request_schema" in body:
        body[core.config.schema_field] = body.pop("request_schema")
    return JSONResponse(body)


async def events(request: Request) -> Response:
    core = _core(request)
    queue = core.bus.subscribe()  # subscribed before the headers go out
    body = stream(core.bus, queue, _base(request), lambda: core.config.keepalive_s, core.draw_noise)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def download(request: Request) -> Response:
    core = _core(request)
    gen_id = str(request.path_params["file"]).removesuffix(".mp4")
    gen = core.store.generations.get(gen_id)
    if gen is None or gen.video is None:
        return JSONResponse({"error": {"message": "No such file"}}, status_code=404)
    check = check_link(
        core.secret,
        gen_id,
        request.query_params.get("expires", ""),
        request.query_params.get("sig", ""),
        _now(),
    )
    if check is not LinkCheck.OK:
        message = "Link expired" if check is LinkCheck.EXPIRED else "Invalid signature"
        return JSONResponse({"error": {"message": message}}, status_code=403)
    core.store.downloads += 1
    if core.config.download_s > 0:
        headers = {"Content-Length": str(len(gen.video))}
        body = _trickled(gen.video, core.config.download_s)
        return StreamingResponse(body, media_type="video/mp4", headers=headers)
    return Response(gen.video, media_type="video/mp4")


async def _trickled(data: bytes, seconds: float) -> AsyncIterator[bytes]:
    """``data`` in pieces spread over ``seconds``: a slow download whose every piece
    comes well within a client's read timeout."""
    pieces = max(1, math.ceil(seconds / DOWNLOAD_PIECE_S))
    size = math.ceil(len(data) / pieces)
    for n in range(pieces):
        await asyncio.sleep(seconds / pieces)
        yield data[n * size : (n + 1) * size]


def _now() -> float:
    return time.time()


async def sim_config(request: Request) -> Response:
    core = _core(request)
    if request.method == "POST":
        try:
            core.configure(await _json_object(request))
        except (SimConfigError, ApiError) as exc:
            return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
    return JSONResponse(core.config.model_dump(mode="json"))


async def sim_stats(request: Request) -> Response:
    return JSONResponse(_core(request).stats())


async def sim_reset(request: Request) -> Response:
    _core(request).reset()
    return JSONResponse({"reset": True})


ROUTES = [
    Route("/api/ai/queue", enqueue, methods=["POST"]),
    Route("/api/ai/queue", list_generations, methods=["GET"]),
    Route("/api/ai/queue/{generation_id}", get_generation, methods=["GET"]),
    Route("/api/ai/queue/{generation_id}", cancel_generation, methods=["DELETE"]),
    Route("/api/ai/queue/{generation_id}/retry", retry_generation, methods=["POST"]),
    Route("/api/ai/videos/generate", generate_sync, methods=["POST"]),
    Route("/api/ai/generations", list_history, methods=["GET"]),
    Route("/api/ai/generations/{generation_id}", get_billed, methods=["GET"]),
    Route("/api/ai/models/{model_id}", get_model, methods=["GET"]),
    Route("/api/events", events, methods=["GET"]),
    Route(FILES_PREFIX + "{file}", download, methods=["GET"]),
    Route("/_sim/config", sim_config, methods=["GET", "POST"]),
    Route("/_sim/stats", sim_stats, methods=["GET"]),
    Route("/_sim/reset", sim_reset, methods=["POST"]),
]


def build_app(config: SimConfig) -> tuple[Starlette, SimCore]:
    """The ASGI app and the core it serves; the core starts and stops with the app."""
    core = SimCore(config)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await core.start()
        try:
            yield
        finally:
            await core.stop()

    middleware = [
        Middleware(EdgeMiddleware, core=core),
        Middleware(
            FaultMiddleware,
            config=lambda: core.config,
            rng=lambda: core.fault_rng,
            store=lambda: core.store,
        ),
    ]
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers={ApiError: api_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.core = core
    return app, core

"""``seedq simulator``: run the provider simulator in the foreground.

Heavy imports (Starlette, uvicorn, PyAV) happen inside the command so that ``seedq``
itself starts fast. Bad flag values end with a one-line message and exit status 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

from simulator.errors import SimConfigError

if TYPE_CHECKING:
    from simulator.config import SimConfig


def simulator_command(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8100, min=0, max=65535, help="Port to listen on."),
    api_key: str | None = typer.Option(
        None, help="Accepted bearer key (default: any non-empty key)."
    ),
    max_concurrency: int = typer.Option(
        4, help="Generations processing at once; more stay queued."
    ),
    latency: str = typer.Option("1:3", help="Seconds per generation, MIN:MAX (floats allowed)."),
    url_ttl: float = typer.Option(300.0, help="Seconds a result URL stays valid (then 403)."),
    download_s: float = typer.Option(0.0, help="Seconds a result download takes (trickled)."),
    fast: bool = typer.Option(False, help="Serve cached clips per parameter class (load tests)."),
    seed: int | None = typer.Option(None, help="Seed for every random choice."),
    keepalive_s: float = typer.Option(15.0, help="Seconds between SSE keep-alive comments."),
    schema_field: str = typer.Option(
        "request_schema",
        help="Schema field name in model objects: request_schema or json_request_schema.",
    ),
    error_rate: float = typer.Option(0.0, help="Share of /api answers that are 5xx."),
    rate_limit_rate: float = typer.Option(0.0, help="Share of /api answers that are 429."),
    retry_after_s: int = typer.Option(1, help="Retry-After of a 429, seconds."),
    slow_rate: float = typer.Option(0.0, help="Share of /api answers delayed by --slow-delay-s."),
    slow_delay_s: float = typer.Option(30.0, help="Delay of a slow answer, seconds."),
    drop_rate: float = typer.Option(0.0, help="Share of /api connections closed before handling."),
    drop_after_rate: float = typer.Option(
        0.0, help="Share of /api connections closed after handling."
    ),
    failure_rate: float = typer.Option(0.0, help="Share of generations that end failed."),
    insufficient_credits: bool = typer.Option(
        False, help="Refuse enqueues (402), fail in-flight ones."
    ),
    unrelated_event_rate: float = typer.Option(0.2, help="Chance of an unrelated SSE event."),
    history: int = typer.Option(
        0, help="Past generations the account starts with (GET /api/ai/generations)."
    ),
    price_factor: float = typer.Option(
        1.0, help="Served (and billed) prices are the shipped copy's times this."
    ),
    stuck_rate: float = typer.Option(
        0.0, help="Share of generations stuck processing until cancelled or retried."
    ),
    stuck_retry_rate: float = typer.Option(
        0.0, help="The same, for generations made by POST /api/ai/queue/{id}/retry."
    ),
    model_patch: str | None = typer.Option(
        None,
        help="JSON object of top-level fields merged into every served model object "
        "(e.g. '{\"pricing\": null}'): a provider whose model object changed shape.",
    ),
) -> None:
    """Run the provider simulator (a real HTTP server following the provider's contract)."""
    config = config_or_exit(ctx.params)
    from simulator.server import serve_forever

    typer.echo(
        f"Simulator on http://{host}:{port} (API under /api, controls under /_sim)", err=True
    )
    serve_forever(config, host, port)


# The options that are not the simulator's configuration, and those named without the
# unit the configuration's name carries.
NOT_CONFIG = frozenset({"host", "port"})
RENAMED = {"url_ttl": "url_ttl_s"}


def config_or_exit(options: Mapping[str, Any]) -> SimConfig:
    """The configuration the command's options (by parameter name) ask for; a bad value
    ends the command with a one-line message and exit status 2."""
    from simulator.config import SimConfig, parse_latency, parse_model_patch, updated_config

    values = {RENAMED.get(k, k): v for k, v in options.items() if k not in NOT_CONFIG}
    try:
        patch = values.pop("model_patch")
        values["model_patch"] = parse_model_patch(patch) if patch is not None else None
        values["latency_s"] = parse_latency(values.pop("latency"))
        return updated_config(SimConfig(), values)
    except SimConfigError as exc:
        typer.echo(f"seedq simulator: {exc}", err=True)
        raise typer.Exit(code=2) from None

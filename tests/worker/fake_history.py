"""``GET /api/ai/generations`` as the OpenAPI documents it, for the fake providers of the
worker tests: one page of the rows, newest first, filtered by model and status, with the
filter's totals. One answer for every fake, so they page alike."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

FILTERS = (("model", "model_name"), ("status", "status"))


def matching(rows: Iterable[dict[str, Any]], query: Mapping[str, str]) -> list[dict[str, Any]]:
    """The rows the query's ``model`` and ``status`` filters keep, newest first (a
    stable sort: rows enqueued in the same second keep their order)."""
    picked = [
        r for r in rows if all(r[field] == query[name] for name, field in FILTERS if name in query)
    ]
    return sorted(picked, key=lambda r: -float(r["enqueued_at"]))


def history_page(rows: Iterable[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """The body of one page: ``page`` and ``page_size`` from the query (API defaults 1
    and 50), ``total_cost`` a decimal string, null when nothing in the set was charged."""
    picked = matching(rows, query)
    number, size = int(query.get("page", "1")), int(query.get("page_size", "50"))
    chunk = picked[(number - 1) * size : number * size]
    charged = [float(r["cost"]) for r in picked if r.get("cost") is not None]
    return {
        "count": len(chunk),
        "generations": chunk,
        "page_number": number,
        "page_size": size,
        "total_entries": len(picked),
        "total_pages": math.ceil(len(picked) / size),
        "total_cost": f"{sum(charged):.6f}" if charged else None,
    }

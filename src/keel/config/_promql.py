"""Ask Prometheus for one number: the instant value of a canary's PromQL query.

Uses the HTTP API (``GET /api/v1/query``). The answer is untrusted input like
a store record: anything but a well-formed success with a finite number is
"no value" with a reason, which the analysis treats as inconclusive (no
decision is taken on missing data). A vector answer counts by its largest
sample, so a query per instance fails when any instance is over.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from keel.config._analysis import PromQuery

__all__ = ["query_value"]

_MAX_BODY = 4 * 1024 * 1024


def _number(sample: Any) -> float | None:
    if not isinstance(sample, list) or len(sample) != 2 or not isinstance(sample[1], str):
        return None
    try:
        value = float(sample[1])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _value_of(body: Any) -> tuple[float | None, str]:
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        return None, f"query failed: {str(error)[:200]}" if error else "query failed"
    data = body.get("data")
    if not isinstance(data, dict):
        return None, "answer has no data"
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        value = _number(result)
        return (value, "") if value is not None else (None, "scalar is not a finite number")
    if kind != "vector" or not isinstance(result, list):
        return None, f"answer is a {kind!r}, not a vector or scalar"
    values = [v for item in result if isinstance(item, dict) for v in [_number(item.get("value"))]]
    numbers = [v for v in values if v is not None]
    if not numbers:
        return None, "empty result (no series matched yet)"
    return max(numbers), ""


async def query_value(client: httpx.AsyncClient, query: PromQuery) -> tuple[float | None, str]:
    """The query's value, or None and why (never raises for a bad or missing answer)."""
    url = query.url.rstrip("/") + "/api/v1/query"
    try:
        response = await client.get(url, params={"query": query.query}, timeout=query.timeout_s)
        if len(response.content) > _MAX_BODY:
            return None, "answer too large"
        return _value_of(response.json())
    except (httpx.HTTPError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]

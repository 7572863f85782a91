"""Decoding of Redis replies and checks of arguments for the Redis Streams engine.

Stream entries are untrusted: an entry whose fields lack our ``d`` field (one
written by something else with ``XADD``) becomes ``data=b""``, which the bus's
codec rejects, so the bus dead-letters it and goes on; entries deleted while
pending (nil fields) are skipped.
"""

from __future__ import annotations

from typing import Any

from keel.errors import ValidationError
from keel.events._engine import START, Entry
from keel.events.redis._scripts import parse_id

__all__ = ["FIELD", "data_of", "entries", "first_stream", "pairs", "position", "text", "ttl_ms"]

FIELD = b"d"
"""The one field of our stream entries: the encoded event record."""


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def position(after: str) -> str:
    if after == START:
        return "0-0"
    parse_id(after)
    return after


def ttl_ms(ttl_s: float) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not ttl_s > 0:
        raise ValidationError(f"ttl_s={ttl_s!r} is not valid: give seconds > 0")
    return max(1, round(ttl_s * 1000))


def pairs(fields: Any) -> dict[bytes, bytes]:
    """A flat ``[field, value, ...]`` list (as Lua answers) as a dict."""
    if isinstance(fields, dict):
        return fields
    if not isinstance(fields, list):
        return {}
    return {fields[i]: fields[i + 1] for i in range(0, len(fields) - 1, 2)}


def data_of(fields: dict[bytes, bytes] | None) -> bytes:
    """Our record out of an entry's fields; ``b""`` (rejected by the codec) if it is not ours."""
    data = fields.get(FIELD) if fields else None
    return data if isinstance(data, bytes) else b""


def first_stream(raw: Any) -> Any:
    """The entries of the one stream in an XREADGROUP reply: RESP3 map, RESP2 list or nil."""
    if not raw:
        return []
    if isinstance(raw, dict):
        return next(iter(raw.values()))
    return raw[0][1]


def entries(raw: Any) -> list[Entry]:
    """Entries from redis-py's ``[(id, {field: value})...]``; deleted (nil) entries skipped."""
    return [Entry(text(i), data_of(pairs(fields))) for i, fields in raw if fields is not None]

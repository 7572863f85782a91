"""Records read from the store are untrusted input: the one way to decode them.

Any record under the root may have been written by another keel version,
another language, a person with ``etcdctl`` or a bug. Each record type has one
decoder (a plain function ``bytes -> T`` that raises on anything it does not
accept); readers call it through :func:`decode`, which turns *every* failure
of decoding into a :class:`Rejected` value naming the key and the reason.
Python raises more than ``ValueError`` on hostile input: ``AttributeError``
when a list stands where an object was expected, ``RecursionError`` on deep
nesting, ``UnicodeDecodeError``, ``OverflowError`` on huge numbers.

Long-running readers skip a rejected record, :func:`report` it (one warning per
key and minute, and ``keel_records_rejected_total{area}``) and keep applying
every later change; a key that becomes valid again is simply decoded again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from keel.observe import capability_metrics

__all__ = ["MAX_DEPTH", "Rejected", "check_depth", "decode", "load_json_object", "report"]

T = TypeVar("T")

MAX_DEPTH = 32
"""Nesting depth accepted in a record (keel's own records are 3 levels deep at most)."""

_LOG_EVERY_S = 60.0
_LOGGED_MAX = 4096  # keys remembered for rate limiting; forgotten all at once past this
_REASON_MAX = 200

log = logging.getLogger("keel.records")
_last_logged: dict[tuple[str, str], float] = {}


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that failed its decoder: which area, which key, and why."""

    area: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.area} record {self.key!r} rejected: {self.reason}"


def decode(area: str, key: str, value: bytes, decoder: Callable[[bytes], T]) -> T | Rejected:
    """Run ``decoder(value)``; any exception it raises becomes a :class:`Rejected`.

    Args:
        area: the kind of record, used as the metric label (``registry``, ``config``...).
        key: the record's key, for the warning.
        value: the raw bytes read from the store.
        decoder: the record type's decoder.

    Returns:
        The decoded record, or :class:`Rejected` (never raises for bad input).
    """
    try:
        return decoder(value)
    except Exception as exc:  # untrusted input: every failure of decoding is a rejection
        return Rejected(area, key, _reason(exc))


def report(rejected: Rejected) -> None:
    """Count a rejection and log it (at most once a minute per key)."""
    capability_metrics().record_rejected(rejected.area)
    now = time.monotonic()
    slot = (rejected.area, rejected.key)
    last = _last_logged.get(slot)
    if last is not None and now - last < _LOG_EVERY_S:
        return
    if len(_last_logged) >= _LOGGED_MAX:
        _last_logged.clear()
    _last_logged[slot] = now
    log.warning("skipping %s (fix or delete the record)", rejected)


def load_json_object(value: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse ``value`` as a JSON object no deeper than ``max_depth``.

    Raises:
        ValueError: not UTF-8 JSON, not an object, or nested too deep.
    """
    try:
        document = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    except RecursionError as exc:
        raise ValueError(f"nested deeper than {max_depth} levels") from exc
    if not isinstance(document, dict):
        raise ValueError(f"a JSON {type(document).__name__} where an object was expected")
    check_depth(document, max_depth)
    return document


def check_depth(document: object, max_depth: int = MAX_DEPTH) -> None:
    """Raise ValueError if ``document`` (JSON-like) nests deeper than ``max_depth``."""
    level: list[object] = [document]
    for _ in range(max_depth):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            return
    raise ValueError(f"nested deeper than {max_depth} levels")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RecursionError):
        text = "nested too deep"
    elif not isinstance(exc, ValueError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"

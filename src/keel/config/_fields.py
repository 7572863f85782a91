"""Strict field readers for config records: every field's type is checked, nothing coerced.

The decoders of :mod:`keel.config._model` read untrusted JSON objects through
these: a string where an integer is expected, a bool for a number, NaN, an
integer past 64 bits or a list where a mapping belongs is a ``ValueError``
naming the field, never a silent coercion or an ``AttributeError`` later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["integer", "number", "optional_number", "string_list", "string_map", "text"]

_MAX_INT = 2**63 - 1
_MISSING = object()


def _get(record: Mapping[str, Any], key: str, default: object) -> Any:
    value = record.get(key, default)
    if value is _MISSING:
        raise ValueError(f"field {key!r} is missing")
    return value


def _what(value: object) -> str:
    return f"a {type(value).__name__}"


def text(record: Mapping[str, Any], key: str, default: object = _MISSING) -> str:
    """The string field ``key`` (``default`` when absent, if given)."""
    value = _get(record, key, default)
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, not {_what(value)}")
    return value


def integer(
    record: Mapping[str, Any], key: str, *, minimum: int, default: object = _MISSING
) -> int:
    """The integer field ``key``, ``minimum`` or more and within 64 bits (bools refused)."""
    value = _get(record, key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {key!r} must be an integer, not {_what(value)}")
    if not minimum <= value <= _MAX_INT:
        raise ValueError(f"field {key!r} is out of range ({minimum} to 2**63-1)")
    return value


def optional_number(record: Mapping[str, Any], key: str) -> float | None:
    """The finite number field ``key``, or None when absent or null."""
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field {key!r} must be a number, not {_what(value)}")
    if isinstance(value, int) and abs(value) > _MAX_INT:
        raise ValueError(f"field {key!r} is out of range")
    if not math.isfinite(value):
        raise ValueError(f"field {key!r} must be a finite number")
    return float(value)


def number(record: Mapping[str, Any], key: str, default: float) -> float:
    """The finite number field ``key`` (``default`` when absent)."""
    value = optional_number(record, key)
    return default if value is None else value


def string_list(record: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """The list-of-strings field ``key`` (empty when absent)."""
    value = record.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"field {key!r} must be a list of strings")
    return tuple(value)


def string_map(record: Mapping[str, Any], key: str) -> dict[str, str]:
    """The string-to-string mapping field ``key`` (empty when absent)."""
    value = record.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"field {key!r} must be a mapping of strings")
    return dict(value)

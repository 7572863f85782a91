"""Type and range checks shared by job definitions, triggers and records.

Values reach the scheduler from code (``Scheduler.job(...)``, ``JobDef(...)``)
and from the store (a definition written by another version, another
language or a person with ``etcdctl``), so nothing here trusts a type: a
bool is not a number, NaN and infinity are not durations, and every error
names the field and the fix.
"""

from __future__ import annotations

import math
import re
from typing import Final

from keel.errors import ValidationError

__all__ = [
    "MAX_EPOCH_S",
    "check_bool",
    "check_job_name",
    "check_seconds",
    "check_str",
    "check_whole",
]

MAX_EPOCH_S: Final = 253_402_300_799.0
"""The last second of year 9999 (UTC): the latest time a datetime can hold."""
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


def check_job_name(name: object) -> str:
    """Return ``name`` if it is a valid job (or handler) name, else raise ValidationError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"job name {_show(name)}: use letters, digits and . _ : - (no '/', at most 200), "
            f"e.g. 'reports.daily'"
        )
    return name


def check_whole(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``, else ValidationError."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{name} {_show(value)}: use a whole number from {low} to {high}")
    return value


def check_seconds(
    name: str,
    value: object,
    *,
    low: float = 0.0,
    high: float = MAX_EPOCH_S,
    above: bool = False,
) -> float:
    """``value`` as a float if it is a finite number in range, else ValidationError.

    Args:
        name: the field, for the message.
        value: what was given.
        low: the smallest value accepted (excluded when ``above``).
        high: the largest value accepted.
        above: refuse ``low`` itself.
    """
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            number = math.inf
    if not (
        math.isfinite(number) and number <= high and (number > low if above else number >= low)
    ):
        bound = f"> {low:g}" if above else f">= {low:g}"
        raise ValidationError(
            f"{name} {_show(value)}: use a number of seconds {bound} and <= {high:g}"
        )
    return number


def check_str(name: str, value: object, *, max_len: int = 200) -> str:
    """``value`` if it is a str of at most ``max_len`` characters, else ValidationError."""
    if not isinstance(value, str) or len(value) > max_len:
        raise ValidationError(
            f"{name} {_show(value)}: use a string of at most {max_len} characters"
        )
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool, else ValidationError."""
    if not isinstance(value, bool):
        raise ValidationError(f"{name} {_show(value)}: use true or false")
    return value


def _show(value: object) -> str:
    """A short repr for messages (a hostile value may be huge)."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 128 else "<huge int>"
    return text if len(text) <= 60 else text[:59] + "…"

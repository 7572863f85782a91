"""The words and pictures ``keel up`` uses, one way everywhere.

Counts agree with their number ("1 job", "2 jobs"); durations and intervals
are written one way (``850 ms``, ``2.5 s``, ``3 min``, ``2 h``); a series of
numbers becomes a sparkline of eight block heights.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["LEGEND", "count", "duration", "size", "sparkline"]

_BLOCKS = "▁▂▃▄▅▆▇█"

LEGEND = (
    "health: lease = alive while its session's lease is renewed; checked = the health "
    "checker probes it too; failing = its probes fail",
    "token: the fencing token of the owner (it grows with every new owner); "
    "waiting: sessions queued behind the owner",
    "requests, 5xx/s: requests and server errors per second, from the shop's /metrics; "
    "recent: durations of the last runs; late: how long after its fire time the last run "
    "started; next: the next fire time (UTC)",
)
"""The terms of the view, explained (also in ``keel up --help``)."""


def count(n: int, word: str, plural: str | None = None) -> str:
    """``1 job``, ``2 jobs`` (``plural`` when adding an ``s`` is wrong)."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def duration(seconds: float | None) -> str:
    """A duration or an interval, written one way: ``850 ms``, ``2.5 s``, ``3 min``, ``2 h``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def size(n_bytes: int) -> str:
    """A size in bytes, written one way: ``812 B``, ``600 KiB``, ``1.1 MiB``, ``2.0 GiB``."""
    if n_bytes < 1024:
        return f"{n_bytes} B"
    if n_bytes < 1024 * 1024:
        return f"{n_bytes / 1024:.0f} KiB"
    if n_bytes < 1024**3:
        return f"{n_bytes / 1024**2:.1f} MiB"
    return f"{n_bytes / 1024**3:.1f} GiB"


def sparkline(values: Iterable[float], width: int = 16) -> str:
    """The last ``width`` values as block heights scaled to their maximum (``▁▃█▅``)."""
    shown = [v for v in values if v == v and v >= 0][-width:]
    if not shown:
        return ""
    top = max(shown)
    if top <= 0:
        return _BLOCKS[0] * len(shown)
    last = len(_BLOCKS) - 1
    return "".join(_BLOCKS[min(last, round(v / top * last))] for v in shown)

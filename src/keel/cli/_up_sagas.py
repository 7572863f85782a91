"""The sagas ``keel up`` shows: those in progress first, then the latest outcomes.

Saga records (``sagas/<name>/<id>``) are decoded by the saga module's own
strict decoder through :func:`keel._records.decode` (a malformed one is
skipped and counted, never drawn); their text is escaped before it is drawn.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping

from rich.text import Text

from keel.cli._common import cell
from keel.cli._up_fmt import duration
from keel.saga._model import ACTIVE, RECORD_PREFIX, SagaRecord, StepState, record_decoder

__all__ = ["COLUMNS", "PREFIX", "WIDTHS", "decode_saga", "saga_counts", "saga_rows", "saga_title"]

PREFIX = RECORD_PREFIX
COLUMNS = ("saga", "status", "step", "updated", "error")
WIDTHS: tuple[int | None, ...] = (18, 11, 8, 7, None)
_STYLE = {"committed": "green", "compensated": "yellow", "failed": "red", "compensating": "yellow"}
_MAX_ROWS = 40
_BUSY = (StepState.STARTED, StepState.COMPENSATING, StepState.FAILED)


def decode_saga(value: bytes) -> SagaRecord:
    """A stored saga record, decoded strictly (raises on anything malformed)."""
    return record_decoder(value)


def saga_counts(records: Mapping[str, SagaRecord]) -> str:
    """``1 running · 5 committed · 1 compensated``: running always, the others when any."""
    by = Counter("running" if r.status in ACTIVE else r.status.value for r in records.values())
    parts = [f"{by['running']} running"]
    parts += [f"{by[s]} {s}" for s in ("committed", "compensated", "failed") if by[s]]
    return " · ".join(parts)


def saga_title(records: Mapping[str, SagaRecord]) -> str:
    """The panel's title: ``sagas · 1 running · 5 committed``."""
    return f"sagas · {saga_counts(records)}"


def _step(rec: SagaRecord) -> str:
    """The step a saga in progress is at (blank once it ended)."""
    if rec.status not in ACTIVE:
        return ""
    busy = [name for name, st in rec.steps.items() if st.state in _BUSY]
    return busy[-1] if busy else ""


def saga_rows(
    records: Mapping[str, SagaRecord], now: float | None = None
) -> list[list[Text | str]]:
    """One row per saga: in progress first (oldest first), then ended ones (newest first)."""
    now = time.time() if now is None else now
    active = sorted((r for r in records.values() if r.status in ACTIVE), key=lambda r: r.created_at)
    ended = sorted(
        (r for r in records.values() if r.status not in ACTIVE), key=lambda r: -r.updated_at
    )
    rows: list[list[Text | str]] = []
    for rec in [*active, *ended][:_MAX_ROWS]:
        status = rec.status.value
        rows.append(
            [
                cell(f"{rec.saga}/{rec.id}"),
                Text(status, style=_STYLE.get(status, "cyan")),
                cell(_step(rec)),
                duration(max(0.0, now - rec.updated_at)),
                cell(rec.error),
            ]
        )
    return rows

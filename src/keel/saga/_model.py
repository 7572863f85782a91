"""The saga record kept under ``sagas/<name>/<id>``: its states, its keys, its one decoder.

The record is readable JSON. Everything read back from the store goes through
:func:`record_decoder` (strict: a wrong type anywhere rejects the whole
record), called by readers through :func:`keel._records.decode`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from keel._records import load_json_object
from keel.errors import ValidationError
from keel.store import Event, EventType

__all__ = [
    "ACTIVE",
    "ACTIVE_PREFIX",
    "OWNER_PREFIX",
    "RECORD_PREFIX",
    "Outcome",
    "SagaRecord",
    "Status",
    "StepRecord",
    "StepState",
    "active_key",
    "check_name",
    "orphans",
    "owner_key",
    "record_decoder",
    "record_key",
    "split_id",
]

RECORD_PREFIX = "sagas/"
OWNER_PREFIX = "saga-run/owner/"
ACTIVE_PREFIX = "saga-run/active/"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Status(enum.StrEnum):
    """Where a saga is: running forward, compensating, or one of its three ends."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMMITTED = "committed"
    COMPENSATED = "compensated"
    FAILED = "failed"


ACTIVE = frozenset({Status.RUNNING, Status.COMPENSATING})
"""The statuses a coordinator drives (the others are ends; FAILED waits for an operator)."""


class Outcome(enum.StrEnum):
    """What :meth:`Coordinator.wait` returns."""

    COMMITTED = "committed"
    COMPENSATED = "compensated"
    FAILED = "failed"


class StepState(enum.StrEnum):
    """One step's state; every change is persisted before the coordinator acts on it."""

    PENDING = "pending"
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"


class StepRecord(msgspec.Struct, kw_only=True):
    """One step of a saga record."""

    state: StepState = StepState.PENDING
    attempts: int = 0
    compensations: int = 0
    result: Any = None
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None


class SagaRecord(msgspec.Struct, kw_only=True):
    """A saga's stored state (see ``docs/saga.md`` for each field)."""

    v: int = 1
    saga: str
    id: str
    status: Status
    input: Any = None
    steps: dict[str, StepRecord]
    error: str = ""
    abort: bool = False
    owner: str = ""
    token: int = 0
    created_at: float
    updated_at: float

    def encode(self) -> bytes:
        """The stored JSON."""
        return msgspec.json.encode(self)

    def copy(self) -> SagaRecord:
        """A deep copy (steps included) to change without touching this one."""
        steps = {k: msgspec.structs.replace(s) for k, s in self.steps.items()}
        return msgspec.structs.replace(self, steps=steps)


def record_decoder(value: bytes) -> SagaRecord:
    """Decode a stored saga record strictly; raises on anything malformed."""
    doc = load_json_object(value)
    rec = msgspec.convert(doc, SagaRecord, strict=True)
    if rec.v != 1:
        raise ValueError(f"record version {rec.v} is not known (this keel reads version 1)")
    for number in (rec.created_at, rec.updated_at):
        if number != number or abs(number) > 1e12:  # NaN or absurd
            raise ValueError("timestamps must be finite epoch seconds")
    if rec.token < 0 or rec.token > 2**63:
        raise ValueError("token out of range")
    return rec


def check_name(name: object, what: str = "saga name") -> str:
    """Return ``name`` if it is a valid saga or step name, else raise ValidationError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            f"{what} {name!r} is not valid: use 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def split_id(saga_id: object) -> tuple[str, str]:
    """``"order/3f2a..."`` → ``("order", "3f2a...")``; ValidationError if malformed."""
    if isinstance(saga_id, str) and saga_id.count("/") == 1:
        name, local = saga_id.split("/")
        if _NAME.fullmatch(name) and _ID.fullmatch(local):
            return name, local
    raise ValidationError(
        f"saga id {saga_id!r} is not valid: a saga id is '<saga name>/<id>', "
        "as start() returns and 'keel sagas ls' shows"
    )


def record_key(saga_id: str) -> str:
    """The record's key."""
    return RECORD_PREFIX + saga_id


def owner_key(saga_id: str) -> str:
    """The owner key (on the owning coordinator's session lease)."""
    return OWNER_PREFIX + saga_id


def active_key(saga_id: str) -> str:
    """The marker present while the saga is running or compensating (what recovery scans)."""
    return ACTIVE_PREFIX + saga_id


def orphans(batch: Sequence[Event]) -> list[str]:
    """Sagas this batch of ``saga-run/`` events leaves active without an owner.

    Events are applied in order, so a saga that ended and was retried within
    one batch is an orphan, and one started with its owner is not.
    """
    owner: dict[str, bool] = {}
    active: dict[str, bool] = {}
    triggered: list[str] = []
    for event in batch:
        key: str = event.kv.key
        put = event.type is EventType.PUT
        if key.startswith(OWNER_PREFIX):
            saga_id = key[len(OWNER_PREFIX) :]
            owner[saga_id] = put
        elif key.startswith(ACTIVE_PREFIX):
            saga_id = key[len(ACTIVE_PREFIX) :]
            active[saga_id] = put
        else:
            continue
        if not put or key.startswith(ACTIVE_PREFIX):  # an owner gone, or an active marker put
            triggered.append(saga_id)
    return [
        saga_id
        for saga_id in dict.fromkeys(triggered)
        if not owner.get(saga_id, False) and active.get(saga_id, True)
    ]

"""The console's audit log: who changed what, when, from which version to which.

Every change made through the console (a publish, a rollback, a drain, a new
user...) is one JSON record in the store, readable with ``etcdctl``::

    console/audit/<bucket>/<entry>   {"id": 1042, "at": "2026-12-06T08:00:00+00:00",
                                      "actor": "alice", "action": "config.publish",
                                      "target": "config/orders.yaml",
                                      "before": 3, "after": 4, "detail": {...}}

Ids are a sequence (1, 2, 3...) taken with a compare-and-swap on
``console/audit-seq``, so they sort in the order the changes were committed
even across console processes whose clocks disagree, and two entries never
share an id. Keys hold the id *inverted* (``999999999999 - id``) so that a
plain prefix range, which returns keys in ascending order, returns the newest
entries first: the first page is one ``range(limit=N)``. Entries are grouped
in buckets of :data:`BUCKET` ids, so an older page reads only the two or three
buckets it needs and retention drops whole buckets with one prefix delete.
The store contract has no "range from key" and no reverse order; this layout
gives both for the cost of one counter write per entry (changes are made by
people: a handful a minute, never a hot path).

Retention is by count: the newest ``retain`` entries are kept (up to one
bucket more until that bucket fills). Records are untrusted on the way back:
:func:`decode_entry` is the one boundary; a malformed record is skipped and
counted (``keel_records_rejected_total{area="audit"}``), never shown raw.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from keel._records import Rejected, decode, load_json_object, report
from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import ConflictError, KeelError, ValidationError
from keel.store import Compare, Delete, Put, Range, Store

__all__ = [
    "AUDIT_AREA",
    "AUDIT_PREFIX",
    "AUDIT_SEQ",
    "BUCKET",
    "Audit",
    "AuditEntry",
    "decode_entry",
    "entry_key",
]

AUDIT_PREFIX = "console/audit/"
AUDIT_SEQ = "console/audit-seq"
AUDIT_AREA = "audit"
"""The ``area`` label of rejected audit records."""
BUCKET = 100
"""Entries per bucket (key group)."""
log = logging.getLogger("keel.console")

MAX_ID = 10**12 - 1
MAX_TEXT = 512  # actor, action, target
MAX_RECORD = 32_768  # bytes; larger before/after/detail are replaced by a notice
MAX_LIMIT = 1000
_ATTEMPTS = 32
_SWEEP_BUCKETS = 10  # buckets past the retention line dropped at each bucket boundary


def entry_key(entry_id: int) -> str:
    """``console/audit/<inverted bucket>/<inverted id>`` of an entry id."""
    return f"{_bucket_prefix(entry_id // BUCKET)}{MAX_ID - entry_id:012d}"


def _bucket_prefix(bucket: int) -> str:
    return f"{AUDIT_PREFIX}{MAX_ID // BUCKET - bucket:010d}/"


def _id_of(key: str) -> int:
    """The entry id a key names; ValueError if it is not an audit entry key."""
    bucket, sep, inverted = key.removeprefix(AUDIT_PREFIX).partition("/")
    if not (
        key.startswith(AUDIT_PREFIX)
        and sep
        and len(bucket) == 10
        and len(inverted) == 12
        and (bucket + inverted).isascii()
        and (bucket + inverted).isdigit()
    ):
        raise ValueError(f"{key!r} is not console/audit/<bucket>/<id>")
    entry_id = MAX_ID - int(inverted)
    if entry_id < 1 or key != entry_key(entry_id):
        raise ValueError(f"{key!r} names no valid entry id")
    return entry_id


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change made through the console.

    Attributes:
        id: the entry's sequence number (grows with every change).
        at: when it was recorded (UTC).
        actor: the console user who made the change.
        action: what was done (``config.publish``, ``instance.drain``...).
        target: what it was done to (``config/orders.yaml``).
        before: the state or version before (JSON), if any.
        after: the state or version after (JSON), if any.
        detail: anything else recorded (a JSON object), if any.
    """

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: Any = None
    after: Any = None
    detail: dict[str, Any] | None = None

    def to_record(self) -> dict[str, Any]:
        """The stored JSON record (also what an API answers)."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "detail": self.detail,
        }


def decode_entry(key: str, value: bytes) -> AuditEntry:
    """Decode a record from ``console/audit/<bucket>/<id>``.

    Raises:
        ValidationError: the key or the record is malformed (every failure).
    """
    try:
        return _entry(key, value)
    except ValidationError:
        raise
    except RecursionError as exc:
        raise ValidationError("nested too deep") from exc
    except Exception as exc:  # untrusted input: every failure is a malformed record
        raise ValidationError(f"{type(exc).__name__}: {exc}"[:200]) from exc


def _entry(key: str, value: bytes) -> AuditEntry:
    entry_id = _id_of(key)
    record = load_json_object(value)
    if record.get("id") != entry_id or isinstance(record.get("id"), bool):
        raise ValidationError(f"id {record.get('id')!r} does not match the key ({entry_id})")
    for name in ("actor", "action", "target"):
        text = record.get(name)
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise ValidationError(f"{name} must be a string of at most {MAX_TEXT} characters")
    at = record.get("at")
    if not isinstance(at, str) or len(at) > 64:
        raise ValidationError("at must be an ISO 8601 date-time string")
    when = datetime.fromisoformat(at)
    detail = record.get("detail")
    if detail is not None and not isinstance(detail, dict):
        raise ValidationError("detail must be a JSON object or null")
    return AuditEntry(
        id=entry_id,
        at=when if when.tzinfo is not None else when.replace(tzinfo=UTC),
        actor=record["actor"],
        action=record["action"],
        target=record["target"],
        before=record.get("before"),
        after=record.get("after"),
        detail=detail,
    )


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise ValidationError(
            f"audit {name} must be a non-empty string of at most {MAX_TEXT} characters"
        )
    return value


def _encode(entry: AuditEntry) -> bytes:
    """The record as JSON; oversized before/after/detail are replaced by a notice."""
    record = entry.to_record()
    try:  # default=str: a change already made is recorded even with an odd value
        body = _dumps(record)
    except (TypeError, ValueError) as exc:  # circular, or keys that are not strings
        raise ValidationError(f"audit before/after/detail must be JSON values ({exc})") from exc
    if len(body) <= MAX_RECORD:
        return body
    for name in ("before", "after", "detail"):
        size = len(_dumps(record[name]))
        if size > MAX_RECORD // 4:
            record[name] = {"omitted": f"{size} bytes of JSON, too large for the audit log"}
    return _dumps(record)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str).encode()


class Audit:
    """The audit log in the store: ``Audit(store)``; ``record()`` changes, read ``recent()``.

    Args:
        store: the store.
        retain: how many entries to keep (at least :data:`BUCKET`).
        clock: time source for the ``at`` field.
    """

    def __init__(self, store: Store, *, retain: int = 10_000, clock: Clock = SYSTEM_CLOCK) -> None:
        if isinstance(retain, bool) or not isinstance(retain, int) or retain < BUCKET:
            raise ValidationError(f"audit retain {retain!r}: keep at least {BUCKET} entries")
        self.store = store
        self.retain = retain
        self._clock = clock

    async def record(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        before: Any = None,
        after: Any = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry (and drop entries past the retention line).

        Args:
            actor: the user who made the change.
            action: the action's name (``config.publish``).
            target: what was changed (``config/orders.yaml``).
            before: the state or version before (any JSON value).
            after: the state or version after (any JSON value).
            detail: more facts worth keeping (a JSON object).

        Returns:
            The entry as written, with its id.

        Raises:
            ValidationError: empty or overlong texts, or values that are not JSON.
            ConflictError: the sequence kept moving under concurrent writers.
        """
        actor, action = _check_text("actor", actor), _check_text("action", action)
        target = _check_text("target", target)
        if detail is not None and not isinstance(detail, dict):
            raise ValidationError("audit detail must be a dict (a JSON object) or None")
        floor = 0  # after a failed attempt: the newest stored id (the counter may lag)
        for _ in range(_ATTEMPTS):
            seq = await self.store.get(AUDIT_SEQ)
            counted = _parse_seq(seq.value) if seq else None
            if counted is None:
                floor = max(floor, await self._newest_id())
            entry_id = max(counted or 0, floor) + 1
            entry = AuditEntry(
                entry_id, self._clock.now(), actor, action, target, before, after, detail
            )
            key = entry_key(entry_id)
            guard = [
                Compare.mod_revision(AUDIT_SEQ, "==", seq.mod_revision if seq else 0),
                Compare.absent(key),
            ]
            ops = [Put(AUDIT_SEQ, str(entry_id).encode()), Put(key, _encode(entry))]
            if (await self.store.txn(guard, ops)).succeeded:
                if entry_id % BUCKET == 0:
                    await self._sweep(entry_id)
                return entry
            floor = await self._newest_id()
        raise ConflictError("the audit log's sequence kept changing: try again")

    async def recent(
        self, limit: int = 100, *, before_id: int | str | None = None
    ) -> list[AuditEntry]:
        """The newest entries first (at most ``limit``), or those older than ``before_id``.

        Args:
            limit: how many, 1 to 1000.
            before_id: only entries with a smaller id (the next page after it).

        Raises:
            ValidationError: a bad limit or id.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"audit limit {limit!r}: use a whole number from 1 to 1000")
        if before_id is None:
            kvs, _ = await self.store.range(AUDIT_PREFIX, limit=limit)
            return self._decoded(kvs)[:limit]
        newest = _parse_id(before_id) - 1
        if newest < 1:
            return []
        first = newest // BUCKET
        buckets = range(first, max(-1, first - limit // BUCKET - 2), -1)
        result = await self.store.txn([], [Range(_bucket_prefix(b)) for b in buckets])
        kvs = [kv for part in result.results if isinstance(part, list) for kv in part]
        return [e for e in self._decoded(kvs) if e.id <= newest][:limit]

    async def get(self, entry_id: int | str) -> AuditEntry | None:
        """One entry by id, or None (also for a malformed record, reported)."""
        kv = await self.store.get(entry_key(_parse_id(entry_id)))
        return None if kv is None else next(iter(self._decoded([kv])), None)

    @staticmethod
    def _decoded(kvs: list[Any]) -> list[AuditEntry]:
        entries: list[AuditEntry] = []
        for kv in kvs:
            entry = decode(AUDIT_AREA, kv.key, kv.value, partial(decode_entry, kv.key))
            if isinstance(entry, Rejected):
                report(entry)
            else:
                entries.append(entry)
        return entries

    async def _newest_id(self) -> int:
        """The highest id among the stored entries (0 when none): the sequence's fallback."""
        kvs, _ = await self.store.range(AUDIT_PREFIX, limit=16)
        for kv in kvs:
            try:
                return _id_of(kv.key)
            except ValueError:
                continue  # a stray key: look at the next
        return 0

    async def _sweep(self, newest: int) -> None:
        """Drop whole buckets that lie entirely past the retention line (errors only logged)."""
        cut = (newest - self.retain + 1) // BUCKET  # buckets below this one are all too old
        doomed = range(max(0, cut - _SWEEP_BUCKETS), cut)
        if not doomed:
            return
        try:
            await self.store.txn([], [Delete(_bucket_prefix(b), prefix=True) for b in doomed])
        except KeelError as exc:  # the entry is written; the next bucket boundary sweeps again
            log.warning("audit retention sweep failed: %s", exc)

    def __repr__(self) -> str:
        return f"<Audit store={self.store!r} retain={self.retain}>"


def _parse_seq(value: bytes) -> int | None:
    text = value.decode("ascii", errors="replace")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def _parse_id(value: int | str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise ValidationError(f"audit id {value!r}: use a whole number from 1 to {MAX_ID}")
    return value

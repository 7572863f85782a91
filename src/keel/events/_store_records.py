"""The store engine's own records, and their one decoding boundary.

Key layout under the store root (readable with ``etcdctl get --prefix``):

- ``events-topics/<topic>``: ``{"partitions": 4, "created_at": 1733...}``
- ``events-seq/<topic>/<p>``: the partition's last sequence number (decimal)
- ``events/<topic>/<p>/<seq:012d>``: ``<append time ms> <event record>``
- ``events-groups/<topic>/<group>/<p>``: the group's cursor on the partition,
  ``{"last": 17, "pending": [{"id": 15, "consumer": "...", "deliveries": 1, "at": ...}]}``
- ``events-members/<topic>/<group>/<member>`` and
  ``events-claims/<topic>/<group>/<p>``: attached to the member's lease.

Topics live under their own prefix (not ``events/<topic>/meta``) so that
listing them does not read every entry.
"""

from __future__ import annotations

import msgspec

from keel._records import Rejected, decode, report
from keel.errors import ValidationError
from keel.events._engine import END, START
from keel.events._model import MAX_PARTITIONS
from keel.store import Compare

__all__ = [
    "Cursor",
    "Pending",
    "TopicMeta",
    "at_seq",
    "claim_key",
    "cursor_key",
    "decode_cursor",
    "decode_entry",
    "decode_seq",
    "decode_topic",
    "encode_entry",
    "entry_key",
    "entry_prefix",
    "member_key",
    "parse_position",
    "seq_id",
    "seq_key",
    "seq_of",
    "topic_key",
]

SEQ_WIDTH = 12


class TopicMeta(msgspec.Struct, frozen=True):
    """A topic's fixed settings."""

    partitions: int
    created_at: float = 0.0


class Pending(msgspec.Struct):
    """One delivered, unacked entry of a group on a partition."""

    id: int
    consumer: str
    deliveries: int
    at: float


class Cursor(msgspec.Struct):
    """A group's state on one partition: last-delivered sequence and pending list (by id)."""

    last: int = 0
    pending: list[Pending] = msgspec.field(default_factory=list)


def topic_key(topic: str) -> str:
    """The key of a topic's meta record."""
    return f"events-topics/{topic}"


def seq_key(topic: str, partition: int) -> str:
    """The key of a partition's sequence counter."""
    return f"events-seq/{topic}/{partition}"


def entry_prefix(topic: str, partition: int) -> str:
    """The prefix of a partition's entries."""
    return f"events/{topic}/{partition}/"


def entry_key(topic: str, partition: int, seq: int) -> str:
    """The key of one entry."""
    return f"events/{topic}/{partition}/{seq:0{SEQ_WIDTH}d}"


def cursor_key(topic: str, group: str, partition: int) -> str:
    """The key of a group's cursor on a partition."""
    return f"events-groups/{topic}/{group}/{partition}"


def member_key(topic: str, group: str, member: str) -> str:
    """The key of a live member (attached to its lease)."""
    return f"events-members/{topic}/{group}/{member}"


def claim_key(topic: str, group: str, partition: int) -> str:
    """The key of a partition's ownership claim (attached to the owner's lease)."""
    return f"events-claims/{topic}/{group}/{partition}"


def encode_entry(when: float, record: bytes) -> bytes:
    """An entry's stored value: append time in ms, a space, the record."""
    return b"%d " % int(when * 1000) + record


def decode_entry(value: bytes) -> tuple[float, bytes]:
    """Split a stored entry into (append time, record); a value without the time has time 0."""
    head, sep, rest = value.partition(b" ")
    if sep and head.isdigit() and len(head) < 16:
        return int(head) / 1000, rest
    return 0.0, value


def _topic(value: bytes) -> TopicMeta:
    meta = msgspec.json.decode(value, type=TopicMeta)
    if not 1 <= meta.partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions {meta.partitions} outside 1..{MAX_PARTITIONS}")
    return meta


def decode_topic(key: str, value: bytes) -> TopicMeta | None:
    """Decode a topic record; None (reported) if malformed."""
    got = decode("events", key, value, _topic)
    if isinstance(got, Rejected):
        report(got)
        return None
    return got


def _cursor(value: bytes) -> Cursor:
    cursor = msgspec.json.decode(value, type=Cursor)
    if cursor.last < 0 or any(p.id <= 0 or p.deliveries < 0 for p in cursor.pending):
        raise ValueError("negative sequence or delivery count")
    return cursor


def decode_cursor(key: str, value: bytes) -> Cursor:
    """Decode a group cursor; a malformed one is reported and read as a fresh cursor.

    A fresh cursor (position 0, nothing pending) re-delivers every retained
    entry: at least once stays true, at the price of duplicates.
    """
    got = decode("events", key, value, _cursor)
    if isinstance(got, Rejected):
        report(got)
        return Cursor()
    return got


def decode_seq(key: str, value: bytes | None) -> int:
    """Decode a sequence counter (0 when absent).

    Raises:
        ValueError: the counter is malformed; appending could overwrite entries,
            so the caller must stop and ask for a fix.
    """
    if value is None:
        return 0
    text = value.decode("ascii", "replace")
    if not text.isdigit() or len(text) > SEQ_WIDTH:
        raise ValueError(
            f"events sequence counter {key!r} holds {text[:40]!r}: set it to the highest "
            f"entry number under events/<topic>/<partition>/"
        )
    return int(text)


def seq_id(seq: int) -> str:
    return f"{seq:0{SEQ_WIDTH}d}"


def parse_position(position: str, end: int) -> int:
    """A position's sequence number; ``END`` is ``end``."""
    if position == END:
        return end
    if position == START:
        return 0
    if not position.isdigit() or len(position) > SEQ_WIDTH + 2:
        raise ValidationError(
            f"{position!r} is not an event id of the store engine: give a number such as "
            f"'000000000017', '0' (the start) or '$' (the end)"
        )
    return int(position)


def seq_of(key: str) -> int:
    tail = key.rsplit("/", 1)[1]
    return int(tail) if tail.isdigit() else 0


def at_seq(key: str, last: int) -> Compare:
    """A compare that holds while the counter ``key`` still reads ``last``."""
    return Compare.absent(key) if last == 0 else Compare.value(key, "==", str(last).encode())

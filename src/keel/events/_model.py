"""Events, their record codec (the one decoding boundary), ids, and name rules.

An event record is JSON (readable with ``etcdctl`` or ``redis-cli``)::

    {"topic": "orders.created", "key": "order-1", "published_at": 1733466000.123,
     "headers": {"traceparent": "00-..."}, "payload": {"id": 1}}

Bytes payloads travel base64-encoded with ``"binary": true``. Records read
back from an engine are untrusted: :func:`decode_record` is the only way in,
and anything it refuses is skipped, counted and dead-lettered by the reader.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from keel._records import check_depth
from keel.errors import ValidationError, ValueTooLargeError

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_PARTITIONS",
    "EventRecord",
    "check_group",
    "check_partitions",
    "check_topic",
    "decode_record",
    "encode_record",
    "event_id",
    "partition_for",
    "split_event_id",
]

DEFAULT_MAX_EVENT_BYTES: Final = 1_000_000
"""The default limit on one encoded event (fits the store's 1 MiB value limit)."""

MAX_PARTITIONS: Final = 1024
"""The most partitions a topic may have."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TOPIC_MAX = 249  # Kafka's limit, so names carry over
_GROUP_MAX = 128
_KEY_MAX = 1024
_HEADERS_MAX = 64
_BINARY = (bytes, bytearray, memoryview)


class EventRecord(msgspec.Struct, omit_defaults=True, frozen=True):
    """One event as stored: what the publisher wrote, nothing a consumer added."""

    topic: str
    published_at: float
    key: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    payload: Any = None
    binary: bool = False

    def value(self) -> Any:
        """The payload as published: JSON-like data, or ``bytes`` for a binary payload."""
        if self.binary:
            return base64.b64decode(self.payload)
        return self.payload


def _check_name(kind: str, name: object, limit: int) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > limit:
        shown = name if isinstance(name, str) else type(name).__name__
        raise ValidationError(
            f"{kind} name {shown!r:.80} is not valid: use 1 to {limit} letters, digits, "
            f"'.', '_' or '-', starting with a letter or digit (e.g. 'orders.created')"
        )
    return name


def check_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic name, else raise ValidationError."""
    return _check_name("topic", topic, _TOPIC_MAX)


def check_group(group: object) -> str:
    """Return ``group`` if it is a valid group (or member) name, else raise ValidationError."""
    return _check_name("group", group, _GROUP_MAX)


def check_partitions(count: object) -> int:
    """Return ``count`` if it is a valid partition count (1..1024), else raise ValidationError."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PARTITIONS:
        raise ValidationError(
            f"partitions={count!r:.40} is not valid: give an int from 1 to {MAX_PARTITIONS} "
            f"(e.g. 4; more partitions allow more consumers per group)"
        )
    return count


def _check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > _KEY_MAX:
        raise ValidationError(
            f"event key must be a non-empty str of at most {_KEY_MAX} characters "
            f"(e.g. 'order-1'), not {type(key).__name__}"
        )
    return key


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if headers is None:
        return {}
    if len(headers) > _HEADERS_MAX or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValidationError(
            f"event headers must be a mapping of str to str with at most {_HEADERS_MAX} entries"
        )
    return dict(headers)


def encode_record(
    topic: str,
    payload: Any,
    *,
    key: str | None,
    headers: Mapping[str, str] | None,
    published_at: float,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> bytes:
    """Validate and encode one event.

    Raises:
        ValidationError: a bad topic, key or headers, or a payload that is not
            JSON-serializable (or ``bytes``).
        ValueTooLargeError: the encoded event is larger than ``max_bytes``.
    """
    binary = isinstance(payload, _BINARY)
    record = EventRecord(
        topic=check_topic(topic),
        published_at=published_at,
        key=_check_key(key),
        headers=_check_headers(headers),
        payload=base64.b64encode(bytes(payload)).decode() if binary else payload,
        binary=binary,
    )
    try:
        data = msgspec.json.encode(record)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(
            f"event payload for {topic!r} is not JSON-serializable ({exc}): publish "
            f"dicts, lists, str, numbers, bool, None, or bytes"
        ) from exc
    if len(data) > max_bytes:
        raise ValueTooLargeError(
            f"event for {topic!r} is {len(data)} bytes encoded, over the limit of {max_bytes}: "
            f"store large data elsewhere and publish a reference, or raise max_event_bytes"
        )
    return data


def _decode(data: bytes) -> EventRecord:
    record = msgspec.json.decode(data, type=EventRecord)
    check_topic(record.topic)
    if record.binary and not isinstance(record.payload, str):
        raise ValueError("binary payload is not a base64 string")
    check_depth(record.payload)
    return record


def decode_record(data: bytes) -> EventRecord:
    """Decode a stored event (the one boundary; call it through ``keel._records.decode``).

    Raises:
        ValueError, msgspec.DecodeError...: anything malformed.
    """
    return _decode(data)


def partition_for(key: str, partitions: int) -> int:
    """The partition of a key: CRC-32 of its UTF-8 bytes, modulo the partition count."""
    return zlib.crc32(key.encode("utf-8")) % partitions


def event_id(partition: int, entry_id: str) -> str:
    """The bus-level id of an entry: ``<partition>:<engine id>``."""
    return f"{partition}:{entry_id}"


def split_event_id(value: str) -> tuple[int, str]:
    """Split an event id into (partition, engine id).

    Raises:
        ValidationError: not of the form ``<partition>:<engine id>``.
    """
    head, sep, tail = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not head.isdigit() or not tail:
        raise ValidationError(
            f"event id {value!r:.80} is not valid: give an id as publish returned it, "
            f"such as '2:000000000017'"
        )
    return int(head), tail

"""API keys: issued once, stored hashed, verified in memory, revoked within a second.

A key is ``keel_<id>_<secret>``: ``id`` is 16 hex characters (public, it names
the record), ``secret`` is 32 bytes from :mod:`secrets` (256 bits, URL-safe
base64). The store keeps only ``gateway/keys/<id>`` →
``{"id", "consumer", "hash", "created_at", "note"}`` with ``hash`` =
``sha256:<hex of SHA-256(full key)>``; the key itself is printed once by
``keel gateway keys add`` and never stored or logged.

Why SHA-256 and not argon2/bcrypt: slow hashes protect *low-entropy* secrets
(passwords) against offline guessing. A 256-bit random key cannot be guessed
however fast the hash is, and a gateway verifies a key on every request, so a
deliberately slow hash (argon2 costs ~50 ms and tens of MiB by design) would be
the gateway's whole latency budget and a denial-of-service lever. SHA-256 of a
high-entropy key is the usual choice for API tokens (GitHub, Stripe-style keys).

:class:`ApiKeys` lists ``gateway/keys/`` once and then follows it with one
store watch, keeping ``id → (consumer, digest)`` in memory: verification never
touches the network and a removed key stops working as soon as the watch
delivers the delete (well under a second on every backend). Records are decoded
at one boundary (:func:`decode_key_record`); a malformed one is skipped and
counted in ``keel_records_rejected_total{area="gateway_keys"}``. Digests are
compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

import msgspec

from keel._records import Rejected, decode, load_json_object, report
from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import CompactedError, KeelError, NotFoundError, StoreClosedError, ValidationError
from keel.gateway._auth import API_KEY_PREFIX, AuthError, Consumer, check_consumer_name

if TYPE_CHECKING:
    from keel.store import Store

__all__ = [
    "KEYS_PREFIX",
    "ApiKeyInfo",
    "ApiKeyRecord",
    "ApiKeys",
    "add_key",
    "decode_key_record",
    "list_keys",
    "remove_key",
]

KEYS_PREFIX = "gateway/keys/"
"""Where API key records live under the store's root."""

log = logging.getLogger("keel.gateway")

_AREA = "gateway_keys"
_ID = re.compile(r"^[0-9a-f]{16}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY_SHAPE = re.compile(rb"^keel_([0-9a-f]{16})_[A-Za-z0-9_-]{20,128}$")
_MAX_NOTE = 500
_RETRY_S = 0.5
_DUMMY = bytes(32)


class ApiKeyRecord(msgspec.Struct, frozen=True):
    """One API key as stored (never the key itself)."""

    id: str
    consumer: str
    hash: str
    created_at: float
    note: str = ""


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a key: everything but its hash."""

    id: str
    consumer: str
    created_at: float
    note: str


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def decode_key_record(key: str, value: bytes) -> ApiKeyRecord:
    """Decode the record at ``key`` (``gateway/keys/<id>``): the one boundary.

    Raises:
        ValueError: not a well-formed key record, or its id differs from its key.
    """
    data = load_json_object(value)
    record = msgspec.convert(data, ApiKeyRecord)
    if not _ID.match(record.id) or key != KEYS_PREFIX + record.id:
        raise ValueError(f"id {record.id!r} is not 16 hex characters matching its key")
    if not _HASH.match(record.hash):
        raise ValueError("hash is not 'sha256:' and 64 hex characters")
    check_consumer_name(record.consumer)
    return record


def _check_consumer(consumer: str) -> str:
    try:
        return check_consumer_name(consumer)
    except AuthError:
        raise ValidationError(
            f"consumer {consumer!r} must be 1 to 256 printable ASCII characters "
            "(it travels in a header)"
        ) from None


async def add_key(store: Store, consumer: str, *, note: str = "") -> tuple[str, str]:
    """Issue a key for ``consumer``; store only its hash.

    Returns:
        ``(key_id, secret)``: the secret is the whole key, shown once; keep it.

    Raises:
        ValidationError: bad consumer name or a note over 500 characters.
    """
    from keel.store import Compare, Put

    _check_consumer(consumer)
    if len(note) > _MAX_NOTE or not note.isprintable():
        raise ValidationError(f"note must be at most {_MAX_NOTE} printable characters")
    while True:
        key_id = secrets.token_hex(8)
        secret = f"{API_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKeyRecord(
            id=key_id,
            consumer=consumer,
            hash="sha256:" + _digest(secret.encode()).hex(),
            created_at=time.time(),
            note=note,
        )
        key = KEYS_PREFIX + key_id
        result = await store.txn([Compare.absent(key)], [Put(key, msgspec.json.encode(record))])
        if result.succeeded:  # an id collision (1 in 2**64) simply draws again
            return key_id, secret


async def remove_key(store: Store, key_id: str) -> bool:
    """Revoke a key; False if there is no such key."""
    if not _ID.match(key_id):
        return False
    return await store.delete(KEYS_PREFIX + key_id) > 0


async def list_keys(
    store: Store, *, on_reject: Callable[[Rejected], object] | None = None
) -> list[ApiKeyInfo]:
    """Every key's public information, by consumer then id; malformed records skipped."""
    kvs, _ = await store.range(KEYS_PREFIX, prefix=True)
    infos = []
    for kv in kvs:
        record = decode(_AREA, kv.key, kv.value, functools.partial(decode_key_record, kv.key))
        if isinstance(record, Rejected):
            report(record)
            if on_reject is not None:
                on_reject(record)
            continue
        infos.append(ApiKeyInfo(record.id, record.consumer, record.created_at, record.note))
    return sorted(infos, key=lambda i: (i.consumer, i.id))


class ApiKeys:
    """The API key table of a gateway process, followed live; see the module docstring.

    ``async with ApiKeys(store) as keys``: loads every record, then follows changes.

    Args:
        store: the store holding ``gateway/keys/``.
        clock: time source for retries.
    """

    def __init__(self, store: Store, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self._clock = clock
        self._table: dict[bytes, tuple[Consumer, bytes]] = {}
        self._loaded = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self.rejected = 0

    async def __aenter__(self) -> Self:
        revision = await self._load()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._task = self._tasks.create_task(self._follow(revision), name="keel-gateway-keys")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
        tasks, self._tasks = self._tasks, None
        if tasks is not None:
            await tasks.__aexit__(et, e, tb)

    # -- verification (the request path) -------------------------------------------

    def verify(self, secret: bytes) -> Consumer:
        """The consumer of a presented key.

        Raises:
            AuthError: malformed, unknown or revoked key.
        """
        match = _KEY_SHAPE.match(secret)
        entry = self._table.get(match.group(1)) if match else None
        expected = entry[1] if entry is not None else _DUMMY
        # compare even for an unknown id, so both paths cost the same
        same = hmac.compare_digest(_digest(secret), expected)
        if entry is None or not same:
            raise AuthError("invalid API key")
        return entry[0]

    def __len__(self) -> int:
        return len(self._table)

    # -- management (delegates; usable without following) -------------------------

    async def add(self, consumer: str, *, note: str = "") -> tuple[str, str]:
        """Issue a key; see :func:`add_key`."""
        return await add_key(self.store, consumer, note=note)

    async def remove(self, key_id: str) -> bool:
        """Revoke a key; see :func:`remove_key`."""
        return await remove_key(self.store, key_id)

    async def list(self) -> builtins.list[ApiKeyInfo]:
        """Every key's public information; see :func:`list_keys`."""
        return await list_keys(self.store)

    # -- following -----------------------------------------------------------------

    def _apply(self, key: str, value: bytes | None) -> None:
        key_id = key.removeprefix(KEYS_PREFIX).encode()
        if value is None:
            self._table.pop(key_id, None)
            return
        record = decode(_AREA, key, value, functools.partial(decode_key_record, key))
        if isinstance(record, Rejected):
            self._table.pop(key_id, None)  # an unreadable record grants nothing
            self.rejected += 1
            report(record)
            return
        consumer = Consumer(record.consumer, "api_key", record.id)
        self._table[key_id] = (consumer, bytes.fromhex(record.hash[7:]))

    async def _load(self) -> int:
        kvs, revision = await self.store.range(KEYS_PREFIX, prefix=True)
        self._table.clear()
        for kv in kvs:
            self._apply(kv.key, kv.value)
        self._loaded.set()
        return revision

    async def _follow(self, revision: int) -> None:
        from keel.store import EventType

        stale = False
        while True:
            try:
                if stale:
                    revision, stale = await self._load(), False
                async with self.store.watch(
                    KEYS_PREFIX, prefix=True, start_revision=revision + 1
                ) as events:
                    async for event in events:
                        deleted = event.type == EventType.DELETE
                        self._apply(event.kv.key, None if deleted else event.kv.value)
                        revision = event.kv.mod_revision
            except CompactedError:
                stale = True
            except StoreClosedError:
                return
            except KeelError as exc:  # keep verifying with the table we have
                log.info("API keys: following interrupted (%s); retrying", exc)
                await self._clock.sleep(_RETRY_S)
                stale = True

    def __repr__(self) -> str:
        return f"ApiKeys(keys={len(self._table)}, rejected={self.rejected})"


def key_not_found(key_id: str) -> NotFoundError:
    """The error for ``keys rm`` of a key that does not exist."""
    return NotFoundError(f"no API key {key_id!r}: list them with 'keel gateway keys ls'")

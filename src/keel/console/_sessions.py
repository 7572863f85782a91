"""Server-side login sessions, each on its own lease so that it expires by itself.

A session is a record at ``console/sessions/<sha256 of the token>``::

    {"user": "ada", "csrf": "<token>", "created_at": 1733000000.0}

attached to a lease of ``ttl_s`` (the store deletes it when the lease runs
out, on every backend). The browser holds only the random token (cookie
``keel_session``, HttpOnly, SameSite=Strict, Secure behind TLS); the store
holds only its hash, so reading the store (the store browser, ``etcdctl``)
never yields a usable session. Logging in always makes a new session (the
id rotates); logging out revokes its lease.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from dataclasses import dataclass

import msgspec

from keel._records import Rejected, decode, report
from keel.errors import KeelError, ValidationError
from keel.store import Store

__all__ = ["COOKIE", "SESSIONS_PREFIX", "Session", "Sessions", "decode_session"]

SESSIONS_PREFIX = "console/sessions/"
COOKIE = "keel_session"
_TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Session:
    """One login: who, its CSRF token, its lease (the token and CSRF stay out of ``repr``)."""

    key: str
    user: str
    csrf: str
    created_at: float
    lease: int

    def __repr__(self) -> str:
        return f"Session(user={self.user!r}, created_at={self.created_at:.0f})"


class _Record(msgspec.Struct):
    user: str
    csrf: str
    created_at: float = 0.0


def decode_session(value: bytes) -> _Record:
    """Decode one session record.

    Raises:
        ValueError: not a session record.
    """
    record = msgspec.json.decode(value, type=_Record)
    if len(record.csrf) < 32:
        raise ValueError("CSRF token too short")
    return record


def _key(token: str) -> str:
    return SESSIONS_PREFIX + hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Create, look up and end sessions in ``store``.

    Args:
        store: where sessions live.
        ttl_s: how long a session lasts from login (absolute; a lease TTL).
    """

    def __init__(self, store: Store, *, ttl_s: int = 8 * 3600) -> None:
        if ttl_s < 60:
            raise ValidationError(f"session ttl_s {ttl_s!r}: use at least 60 seconds")
        self.store = store
        self.ttl_s = ttl_s

    def __repr__(self) -> str:
        return f"Sessions(store={self.store!r}, ttl_s={self.ttl_s})"

    async def create(self, user: str) -> tuple[str, Session]:
        """Start a session for ``user``; returns (cookie token, session)."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        csrf = secrets.token_urlsafe(_TOKEN_BYTES)
        lease = await self.store.grant(self.ttl_s)
        now = time.time()
        key = _key(token)
        record = {"user": user, "csrf": csrf, "created_at": now}
        try:
            await self.store.put(key, msgspec.json.encode(record), lease=lease.id)
        except BaseException:
            await self._revoke(lease.id)
            raise
        return token, Session(key, user, csrf, now, lease.id)

    async def get(self, token: str | None) -> Session | None:
        """The live session for a cookie token, or None (unknown, expired, malformed)."""
        if not token or len(token) > 128:
            return None
        kv = await self.store.get(_key(token))
        if kv is None:
            return None
        record = decode("console", kv.key, kv.value, decode_session)
        if isinstance(record, Rejected):
            report(record)
            return None
        return Session(kv.key, record.user, record.csrf, record.created_at, kv.lease)

    async def end(self, session: Session) -> None:
        """Log out: revoke the session's lease (its record goes with it)."""
        await self.store.delete(session.key)
        await self._revoke(session.lease)

    async def end_all(self, user: str) -> int:
        """End every session of ``user`` (after a password change or removal); returns the count."""
        kvs, _ = await self.store.range(SESSIONS_PREFIX)
        ended = 0
        for kv in kvs:
            record = decode("console", kv.key, kv.value, decode_session)
            if isinstance(record, Rejected) or record.user != user:
                continue
            await self.end(Session(kv.key, record.user, record.csrf, record.created_at, kv.lease))
            ended += 1
        return ended

    async def _revoke(self, lease: int) -> None:
        if lease:
            with contextlib.suppress(KeelError):  # already expired: the record went with it
                await self.store.revoke(lease)

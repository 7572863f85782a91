"""The ``Idempotency-Key`` ASGI middleware (IETF httpapi draft; Stripe's behaviour).

Per request of a method in ``settings.methods`` carrying ``Idempotency-Key``:

1. the request body is read (it is part of the fingerprint: method, path,
   query, selected headers and body, sha256) and handed on to the app unchanged;
2. the key is claimed with an in-progress record on a lease of ``lease_s``
   (renewed while the app runs; a crashed process lets go when it ends);
3. first request: the app runs, its response streams to the client as usual
   and is captured (status, headers, body up to ``max_body_bytes``); it is
   stored for ``ttl_s`` *before* its last chunk is sent, so a client that
   got the whole response can always have it replayed. A 5xx response or an
   exception releases the key instead, so a retry runs again;
4. a later request with the key: the same fingerprint gets the stored
   response with ``Idempotent-Replayed: true``; a different fingerprint gets
   422; while the first still runs, 409 with ``Retry-After``.

Refusals are ``application/problem+json`` (RFC 9457) documents, as the draft asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError
from keel.idempotency._backends import Backend, Claim, RedisBackend, StoreBackend
from keel.idempotency._record import DONE, RUNNING, TOO_LARGE, Record, fingerprint, key_hash
from keel.idempotency._settings import IdempotencySettings
from keel.store import Store

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["REPLAYED_HEADER", "Middleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KEY_HEADER = b"idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"


class _TooLarge(Exception):
    pass


class Middleware:
    """Answer retried requests with an ``Idempotency-Key`` from the stored first response.

    Args:
        app: the ASGI application.
        store: keep records in this keel store (``idempotency/<namespace>/…``).
        redis: or in Redis (a ``redis.asyncio.Redis``), with ``SET NX PX``.
        settings: methods, TTLs and caps (default: :class:`IdempotencySettings`).

    Raises:
        ValidationError: neither or both of ``store`` and ``redis``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Store | None = None,
        redis: Redis | None = None,
        settings: IdempotencySettings | None = None,
    ) -> None:
        self.app = app
        self.settings = s = settings or IdempotencySettings()
        if (store is None) == (redis is None):
            raise ValidationError(
                "idempotency Middleware needs one place for its records: pass store=… or redis=…"
            )
        self.backend: Backend = (
            StoreBackend(store, s.namespace)
            if store is not None
            else RedisBackend(redis, s.namespace)  # type: ignore[arg-type]  # not None here
        )
        self._fp_headers = [h.lower().encode() for h in s.fingerprint_headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.settings.methods:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        raw_key = next((v for k, v in headers if k.lower() == KEY_HEADER), None)
        if raw_key is None:
            if self.settings.required:
                await _problem(send, 400, "Idempotency-Key is missing",
                               "this endpoint requires an Idempotency-Key header: "
                               "send a unique value (a UUID) per operation")  # fmt: skip
                return
            await self.app(scope, receive, send)
            return
        key = _parse_key(raw_key, self.settings.max_key_length)
        if key is None:
            await _problem(send, 400, "Idempotency-Key is malformed",
                           f"send 1 to {self.settings.max_key_length} visible ASCII characters "
                           "(a UUID), optionally as a quoted string")  # fmt: skip
            return
        try:
            body = await _read_body(receive, self.settings.max_request_bytes)
        except _TooLarge:
            await _problem(send, 413, "Request body too large for an idempotent request",
                           f"send at most {self.settings.max_request_bytes} bytes, "
                           "or no Idempotency-Key")  # fmt: skip
            return
        if body is None:
            return  # the client went away
        await self._keyed(scope, receive, send, key, body)

    async def _keyed(
        self, scope: Scope, receive: Receive, send: Send, key: str, body: bytes
    ) -> None:
        s = self.settings
        picked = [v for k, v in scope["headers"] if k.lower() in self._fp_headers]
        fp = fingerprint(scope["method"], scope["path"], scope.get("query_string", b""), body,
                         picked)  # fmt: skip
        found = await self.backend.claim(
            key_hash(key), Record(RUNNING, fp, token=secrets.token_hex(8)), s.lease_s
        )
        if isinstance(found, Record):
            await _answer_existing(send, found, fp)
            return
        await self._run(scope, _replaying(body, receive), send, found, fp)

    async def _run(self, scope: Scope, receive: Receive, send: Send, claim: Claim, fp: str) -> None:
        capture = _Capture(send, self.settings.max_body_bytes, lambda c: self._finish(claim, c, fp))
        try:
            async with asyncio.TaskGroup() as tasks:
                renewing = tasks.create_task(self._renew(claim))
                try:
                    await self.app(scope, receive, capture)
                finally:
                    renewing.cancel()
        except BaseException:
            if not capture.stored:
                with contextlib.suppress(Exception):
                    await self.backend.release(claim)
            raise
        if not capture.stored:
            await self.backend.release(claim)

    async def _finish(self, claim: Claim, capture: _Capture, fp: str) -> None:
        """Store the response before its last chunk leaves: a client that got it can replay it."""
        if capture.status >= 500:
            return  # released once the app returns: a retry runs again
        if capture.too_large:
            record = Record(TOO_LARGE, fp, status=capture.status)
        else:
            body = b"".join(capture.chunks)
            record = Record(DONE, fp, status=capture.status, headers=tuple(capture.headers),
                            body=body)  # fmt: skip
        capture.stored = await self.backend.finish(claim, record, self.settings.ttl_s)

    async def _renew(self, claim: Claim) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            await self.backend.renew(claim, self.settings.lease_s)

    def __repr__(self) -> str:
        return f"<idempotency.Middleware {type(self.backend).__name__} {self.settings.namespace!r}>"


class _Capture:
    """A ``send`` that passes messages on, keeps a copy, and stores it before the last chunk."""

    def __init__(
        self, send: Send, cap: int, on_complete: Callable[[_Capture], Awaitable[None]]
    ) -> None:
        self.send = send
        self.cap = cap
        self.on_complete = on_complete
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.stored = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            chunk = bytes(message.get("body", b""))
            self.size += len(chunk)
            if self.size > self.cap:
                self.too_large, self.chunks = True, []
            elif not self.too_large:
                self.chunks.append(chunk)
            if not message.get("more_body", False):
                await self.on_complete(self)
        await self.send(message)


def _parse_key(raw: bytes, max_len: int) -> str | None:
    text = raw.decode("latin-1").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]  # the draft's sf-string form
    if not 0 < len(text) <= max_len or any(not 0x20 < ord(c) < 0x7F for c in text):
        return None
    return text


async def _read_body(receive: Receive, cap: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer_existing(send: Send, found: Record, fp: str) -> None:
    if found.fp != fp:
        await _problem(send, 422, "Idempotency-Key reused with a different request",
                       "this key was used for a different method, path or body: "
                       "use a new key for a new operation")  # fmt: skip
    elif found.state == RUNNING:
        await _problem(send, 409, "A request with this Idempotency-Key is in progress",
                       "wait for the first request to finish, then retry",
                       retry_after=1)  # fmt: skip
    elif found.state == TOO_LARGE:
        await _problem(send, 409, "The first response is too large to replay",
                       f"the request completed with status {found.status}, but its response "
                       "was not kept; use a new key to repeat the operation")  # fmt: skip
    else:
        headers = [*found.headers, (REPLAYED_HEADER.encode(), b"true")]
        await send({"type": "http.response.start", "status": found.status, "headers": headers})
        await send({"type": "http.response.body", "body": found.body})


async def _problem(
    send: Send, status: int, title: str, detail: str, *, retry_after: int | None = None
) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status,
                       "detail": detail}).encode()  # fmt: skip
    headers = [(b"content-type", b"application/problem+json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

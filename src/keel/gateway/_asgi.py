"""Small ASGI pieces of the gateway app: request ids, body counting, plain answers.

Kept apart from :mod:`keel.gateway._app` so the phases read top to bottom there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from itertools import count
from typing import Any

from keel.gateway._logs import AccessRecord

__all__ = [
    "Counted",
    "RequestIds",
    "dot_segments",
    "error_body",
    "guard",
    "length_ok",
    "lifespan",
    "sane_id",
    "send_response",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestIds:
    """Request ids: a random per-process prefix and a counter (unique, and cheap)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._next = count(1).__next__

    def new(self) -> str:
        """A new request id."""
        return f"{self._prefix}-{self._next():x}"


def sane_id(value: bytes) -> bool:
    """Whether a client's request id may be kept (1..128 printable ASCII characters)."""
    return 0 < len(value) <= 128 and value.isascii() and value.decode("ascii").isprintable()


class Counted:
    """``receive`` that counts body bytes and ends a body past ``limit`` (None: no limit).

    Past the limit the upstream side sees the client leave (``http.disconnect``),
    so the upstream request is abandoned, and :attr:`over` is set: the app then
    answers 413 in place of whatever the proxy would have said (see :func:`guard`).
    """

    __slots__ = ("_limit", "_receive", "_record", "over")

    def __init__(self, receive: Receive, record: AccessRecord, limit: int | None) -> None:
        self._receive = receive
        self._record = record
        self._limit = limit
        self.over = False

    async def __call__(self) -> Message:
        if self.over:
            return {"type": "http.disconnect"}
        message = await self._receive()
        body = message.get("body")
        if body:
            self._record.bytes_in += len(body)
            if self._limit is not None and self._record.bytes_in > self._limit:
                self.over = True
                return {"type": "http.disconnect"}
        return message


def guard(send: Send, counted: Counted, record: AccessRecord, detail: str) -> Send:
    """``send`` that answers 413 instead of a response begun after the body went over."""
    replaced = [False]

    async def guarded(message: Message) -> None:
        if message["type"] == "http.response.start" and counted.over:
            replaced[0] = True
            body = error_body("too_large", detail, record.request_id)
            record.reason = "too_large"
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif not replaced[0]:
            await send(message)

    return guarded


def length_ok(value: bytes, limit: int) -> bool:
    """Whether a ``content-length`` value is a number within ``limit``."""
    return value.isdigit() and int(value) <= limit


def dot_segments(path: str) -> bool:
    """Whether ``path`` has ``.`` or ``..`` segments."""
    return any(segment in (".", "..") for segment in path.split("/"))


async def send_response(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Send a whole response."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol (the gateway has nothing to start or stop there)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def error_body(reason: str, detail: str, request_id: str) -> bytes:
    """The small JSON body of an answer the gateway makes itself."""
    return json.dumps({"error": reason, "detail": detail, "request_id": request_id}).encode()

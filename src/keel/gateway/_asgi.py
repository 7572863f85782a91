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
    "BodyTooLargeError",
    "Counted",
    "RequestIds",
    "dot_segments",
    "error_body",
    "length_ok",
    "lifespan",
    "sane_id",
    "send_response",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLargeError(Exception):
    """A streamed request body went past the route's limit."""


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
    """``receive`` that counts body bytes and stops a body past ``limit`` (None: no limit)."""

    __slots__ = ("_limit", "_receive", "_record")

    def __init__(self, receive: Receive, record: AccessRecord, limit: int | None) -> None:
        self._receive = receive
        self._record = record
        self._limit = limit

    async def __call__(self) -> Message:
        message = await self._receive()
        body = message.get("body")
        if body:
            self._record.bytes_in += len(body)
            if self._limit is not None and self._record.bytes_in > self._limit:
                raise BodyTooLargeError(f"request body over {self._limit} bytes")
        return message


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

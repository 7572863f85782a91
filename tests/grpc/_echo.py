"""The test servicer of keel.test.Echo, shared by the server and channel tests.

Knobs on each EchoRequest:

- ``delay_ms``: sleep this long before each reply (before aborting, too).
- ``fail_code``: a non-zero ``grpc.StatusCode`` value; Unary and ClientStream abort
  with it, ServerStream aborts after sending its ``count`` replies, Bidi aborts on
  the request that carries it.
- ``count``: how many replies ServerStream sends (at least 1 unless ``fail_code``
  is set, in which case 0 means "fail at once").

Each reply carries ``served_by`` (the name given to the servicer),
``deadline_left_s`` (``context.time_remaining()``, 0 without a deadline) and
``traceparent`` (the W3C header from the invocation metadata, if any).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from tests.grpc import echo_pb2, echo_pb2_grpc

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _status(fail_code: int) -> grpc.StatusCode:
    """The grpc.StatusCode whose numeric value is ``fail_code`` (UNKNOWN if none)."""
    return _CODES.get(fail_code, grpc.StatusCode.UNKNOWN)


class EchoService(echo_pb2_grpc.EchoServicer):
    """keel.test.Echo: echoes text back and reports what the server saw."""

    def __init__(self, served_by: str) -> None:
        self.served_by = served_by

    def _reply(self, text: str, context: grpc.aio.ServicerContext) -> echo_pb2.EchoReply:
        """A reply filled with what this call's context shows."""
        left = context.time_remaining()
        traceparent = ""
        for key, value in context.invocation_metadata() or ():
            if key == "traceparent":
                traceparent = value if isinstance(value, str) else value.decode()
        return echo_pb2.EchoReply(
            text=text,
            served_by=self.served_by,
            deadline_left_s=left if left is not None else 0.0,
            traceparent=traceparent,
        )

    @staticmethod
    async def _delay(request: echo_pb2.EchoRequest) -> None:
        if request.delay_ms > 0:
            await asyncio.sleep(request.delay_ms / 1000)

    async def Unary(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoReply:
        """One reply, after ``delay_ms``; aborts with ``fail_code`` if set."""
        await self._delay(request)
        if request.fail_code:
            await context.abort(_status(request.fail_code), f"fail_code={request.fail_code}")
        return self._reply(request.text, context)

    async def ServerStream(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[echo_pb2.EchoReply]:
        """``count`` replies ``text#i``, each after ``delay_ms``; then ``fail_code``."""
        count = request.count if request.count > 0 or request.fail_code else 1
        for i in range(count):
            await self._delay(request)
            yield self._reply(f"{request.text}#{i}", context)
        if request.fail_code:
            await context.abort(_status(request.fail_code), f"fail_code={request.fail_code}")

    async def ClientStream(
        self,
        request_iterator: AsyncIterator[echo_pb2.EchoRequest],
        context: grpc.aio.ServicerContext,
    ) -> echo_pb2.EchoReply:
        """One reply joining every request's text with ","."""
        texts = []
        async for request in request_iterator:
            await self._delay(request)
            if request.fail_code:
                await context.abort(_status(request.fail_code), f"fail_code={request.fail_code}")
            texts.append(request.text)
        return self._reply(",".join(texts), context)

    async def Bidi(
        self,
        request_iterator: AsyncIterator[echo_pb2.EchoRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[echo_pb2.EchoReply]:
        """One reply per request, after its ``delay_ms``; aborts on a ``fail_code``."""
        async for request in request_iterator:
            await self._delay(request)
            if request.fail_code:
                await context.abort(_status(request.fail_code), f"fail_code={request.fail_code}")
            yield self._reply(request.text, context)

"""``/metrics`` over plain HTTP beside a gRPC server, on the event loop (no thread).

A gRPC port speaks HTTP/2 with gRPC framing only, so Prometheus cannot scrape
it; ``prometheus_client.start_http_server`` would answer from a thread of its
own. This is the smallest HTTP/1.1 responder that does the job: one request
per connection, ``GET /metrics`` (any other path is 404), the text format.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["serve_metrics"]

_MAX_HEAD = 16 * 1024  # a scrape request is a few hundred bytes
_READ_TIMEOUT_S = 5.0


async def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> asyncio.Server:
    """Start answering ``GET /metrics`` with ``registry``'s series on ``host:port``.

    Returns:
        the listening server (``server.sockets[0].getsockname()[1]`` is the port);
        close it with ``server.close()`` and ``await server.wait_closed()``.

    Raises:
        OSError: the address cannot be bound.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        parts = head.split(b" ", 2)
        if len(parts) == 3 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
            status, content_type = b"200 OK", CONTENT_TYPE_LATEST.encode()
            body = await asyncio.to_thread(generate_latest, registry)
        else:
            status, content_type, body = b"404 Not Found", b"text/plain", b"GET /metrics\n"
        writer.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
            + b"\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n" + body
        )  # fmt: skip
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, host, port, limit=_MAX_HEAD)

"""A TCP proxy in front of one etcd member that can reset every gRPC stream through it.

:meth:`ResetProxy.reset_streams` writes an HTTP/2 ``RST_STREAM`` frame with
error code ``INTERNAL_ERROR`` to the client, between two whole frames, for
every stream the client opened on each connection. gRPC then ends those calls
with status ``INTERNAL`` - what a client sees when a connection breaks in the
middle of a stream (the "Internal error from Core" of a healed partition) -
while etcd itself and the TCP connection stay up.

Only the server-to-client direction is parsed (after the client's 24-byte
connection preface, the client-to-server direction is parsed too, to learn
the ids of the streams it opened from its HEADERS frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

__all__ = ["ResetProxy"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS = 0x1
_RST_STREAM = 0x3
_INTERNAL_ERROR = 0x2


async def _frames(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    header = await reader.readexactly(9)
    length = int.from_bytes(header[:3], "big")
    stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
    return header[3], stream, header + await reader.readexactly(length)


class _Link:
    """One client connection and its connection to etcd."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.streams: set[int] = set()

    def reset(self) -> None:
        for stream in sorted(self.streams):
            frame = struct.pack(">I", 4)[1:] + bytes([_RST_STREAM, 0])
            self.client.write(frame + struct.pack(">II", stream, _INTERNAL_ERROR))
        self.streams.clear()


class ResetProxy:
    """Forwards 127.0.0.1:<port> to ``target`` (``host:port``); see the module docstring."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.resets = 0

    async def start(self) -> str:
        """Listen on a free loopback port; return ``127.0.0.1:<port>``."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def reset_streams(self) -> int:
        """Reset every open stream of every connection; return how many connections."""
        for link in self._links:
            link.reset()
        self.resets += 1
        return len(self._links)

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = _Link(c_writer)
        try:
            s_reader, s_writer = await asyncio.open_connection(*self._target)
        except OSError:
            c_writer.close()
            self._tasks.discard(task)
            return
        self._links.add(link)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._upstream(c_reader, s_writer, link))
                tasks.create_task(self._downstream(s_reader, c_writer))
        except* (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(link)
            for writer in (c_writer, s_writer):
                writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _upstream(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        writer.write(await reader.readexactly(len(_PREFACE)))
        while True:
            kind, stream, frame = await _frames(reader)
            if kind == _HEADERS and stream:
                link.streams.add(stream)
            writer.write(frame)
            await writer.drain()

    @staticmethod
    async def _downstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, _, frame = await _frames(reader)
            writer.write(frame)  # whole frames only, so a reset lands between two
            await writer.drain()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.client.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

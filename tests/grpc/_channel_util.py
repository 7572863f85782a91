"""Helpers of the channel tests: in-process Echo servers and hand-written instance records."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator

import grpc

from keel.store import Store
from tests.grpc import echo_pb2_grpc
from tests.grpc._echo import EchoService


@contextlib.asynccontextmanager
async def plain_echo(name: str, port: int = 0) -> AsyncIterator[int]:
    """A bare grpc.aio server (no keel) serving Echo as ``name``; yields its port."""
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(EchoService(name), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield bound
    finally:
        await server.stop(None)


async def put_instance(
    store: Store,
    service: str,
    instance_id: str,
    port: int,
    *,
    scheme: str = "grpc",
    address: str = "127.0.0.1",
) -> None:
    """Write an instance record by hand, in the documented JSON layout."""
    record = {"address": address, "port": port, "scheme": scheme}
    await store.put(f"services/{service}/{instance_id}", json.dumps(record).encode())


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

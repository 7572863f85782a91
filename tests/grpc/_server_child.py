"""A keel.grpc.Server in a child process: ``python -m tests.grpc._server_child NAME STORE_URL``.

Serves keel.test.Echo (``served_by`` is NAME); prints ``READY <port> <instance-id>``
once registered and ``STOPPED`` when serve() returned. ``KEEL_SERVICE_*``
variables tune it (``KEEL_SERVICE_DRAIN_DELAY_S``, ``KEEL_SERVICE_GRACE_S``...).

``server`` is the same thing for ``keel run tests.grpc._server_child:server --name echo``.
"""

from __future__ import annotations

import asyncio
import sys

from keel.grpc import Server
from tests.grpc import echo_pb2_grpc
from tests.grpc._echo import EchoService

server = Server("echo")
server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService("echo"))


async def main(name: str, url: str) -> None:
    server = Server(name, store=url)
    server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService(name))

    async def announce() -> None:
        await server.ready.wait()
        print("READY", server.port, server.instance_id, flush=True)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(announce())
        await server.serve()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

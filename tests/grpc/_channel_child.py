"""An Echo instance for the channel tests.

``python -m tests.grpc._channel_child SERVICE URL NAME [PORT]``

Serves keel.test.Echo through keel.grpc.Server (``served_by`` is NAME) on PORT
(0: a free one); prints ``READY <port> <instance-id>`` once registered and
``STOPPED`` when serve() returned after draining. ``KEEL_SERVICE_*`` variables
tune it (``KEEL_SERVICE_TTL_S``, ``KEEL_SERVICE_GRACE_S``...).
"""

from __future__ import annotations

import asyncio
import sys

from keel.grpc import Server
from tests.grpc import echo_pb2_grpc
from tests.grpc._echo import EchoService


async def main(service: str, url: str, name: str, port: int) -> None:
    server = Server(service, store=url, port=port, host="127.0.0.1")
    server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService(name))

    async def announce() -> None:
        await server.ready.wait()
        print("READY", server.port, server.instance_id, flush=True)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(announce())
        await server.serve()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    port = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], port))

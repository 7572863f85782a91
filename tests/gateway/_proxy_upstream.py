"""A tiny upstream for the proxy's fault tests (uvicorn, not registered: the test registers it).

``python -m tests.gateway._proxy_upstream TAG [--port N]`` prints ``READY <port>``.

- ``POST /hang``: prints ``HANG <tag>`` and never answers (a request in flight to kill);
- ``POST /__fail?on=1`` / ``?on=0``: answer 500 to everything else from now on, or stop;
- ``GET /__count``: ``{"GET": n, "POST": m, ...}`` requests seen so far, by method;
- anything else: 200 with body ``<tag>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from tests._procs import Child, Children

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def make_app(tag: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI app of one instance."""
    seen: Counter[str] = Counter()
    failing = False

    async def reply(send: Send, status: int, body: bytes) -> None:
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal failing
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        path, method = scope["path"], scope["method"]
        if path == "/__count":
            await reply(send, 200, json.dumps(seen).encode())
            return
        if path == "/__fail":
            failing = scope["query_string"] == b"on=1"
            await reply(send, 200, b"ok")
            return
        seen[method] += 1
        if path == "/hang" and method == "POST":
            print("HANG", tag, flush=True)
            await asyncio.Event().wait()
        await reply(send, 500 if failing else 200, tag.encode())

    return app


async def start(children: Children, tag: str, port: int = 0) -> tuple[Child, int]:
    """One instance in a child process; returns (child, port) once it serves."""
    child = await children.start("tests.gateway._proxy_upstream", tag, "--port", port)
    return child, int((await child.expect("READY", 30))[0])


async def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tag")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    config = uvicorn.Config(
        make_app(args.tag),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        if serving.done():
            await serving
        await asyncio.sleep(0.01)
    print("READY", server.servers[0].sockets[0].getsockname()[1], flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(_main())

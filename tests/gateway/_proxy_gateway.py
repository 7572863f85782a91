"""A minimal gateway for the proxy tests and the benchmark: one Target, served by uvicorn.

``python -m tests.gateway._proxy_gateway STORE_URL SERVICE [--port N] [--timeout S]
[--retries N] [--open-s S] [--url URL]`` prints ``READY <port>`` once serving.
Every path is forwarded to the target; ``/__stats`` answers the
:class:`~keel.gateway._proxy.Upstreams` statistics as JSON. Request headers
lose their hop-by-hop ones here (in the real gateway, security's
``upstream_headers`` does it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

import keel
from keel.balance import OutlierSettings, PeakEwmaSettings
from keel.gateway._proxy import Target, Upstreams
from keel.gateway._settings import UpstreamSettings
from keel.gateway._wire import HOP_BY_HOP
from keel.registry import Discovery
from keel.resilience import BreakerSettings
from tests._procs import Child, Children

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def make_app(upstreams: Upstreams, target: Target) -> App:
    """An ASGI app forwarding every request to ``target``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path_qs = scope["raw_path"] or scope["path"].encode()
        if scope["query_string"]:
            path_qs += b"?" + scope["query_string"]
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        if kind == "websocket":
            await upstreams.websocket(target, path_qs, headers, receive, send)
            return
        if scope["path"] == "/__stats":
            body = json.dumps(dataclasses.asdict(upstreams.statistics())).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await upstreams.forward(target, scope["method"], path_qs, headers, receive, send)

    return app


async def start(
    children: Children,
    store_url: str,
    service: str,
    *,
    timeout_s: float = 30.0,
    retries: int = 2,
    open_s: float = 5.0,
    url: str | None = None,
) -> tuple[Child, int]:
    """The test gateway in a child process; returns (child, port) once it serves."""
    args: list[object] = [store_url, service, "--timeout", timeout_s, "--retries", retries]
    args += ["--open-s", open_s]
    if url is not None:
        args += ["--url", url]
    child = await children.start("tests.gateway._proxy_gateway", *args)
    return child, int((await child.expect("READY", 30))[0])


def settings(open_s: float) -> UpstreamSettings:
    """Settings whose breaker opens quickly and probes after ``open_s`` (ejections as long)."""
    return UpstreamSettings(
        breaker=BreakerSettings(
            window_size=10, minimum_calls=3, open_duration_s=open_s, half_open_max_calls=1
        ),
        outlier=OutlierSettings(
            consecutive_failures=5,
            base_ejection_s=open_s,
            max_ejection_s=max(open_s, 1.0),
            max_ejection_percent=50.0,
        ),
        peak_ewma=PeakEwmaSettings(decay_s=open_s, failure_penalty_s=open_s / 10),
    )


async def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store_url")
    parser.add_argument("service")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--open-s", type=float, default=5.0)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    target = Target(
        route="test",
        service=None if args.url else args.service,
        url=args.url,
        timeout_s=args.timeout,
        retries=args.retries,
    )
    store = await keel.connect(args.store_url)
    try:
        async with (
            Discovery(store) as discovery,
            Upstreams(discovery, settings=settings(args.open_s)) as upstreams,
        ):
            if not args.url:
                await discovery.instances(args.service)
            config = uvicorn.Config(
                make_app(upstreams, target),
                host="127.0.0.1",
                port=args.port,
                http="httptools",
                ws="websockets",
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
            port = server.servers[0].sockets[0].getsockname()[1]
            print("READY", port, flush=True)
            await serving
    finally:
        await store.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(_main())

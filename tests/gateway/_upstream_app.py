"""A small upstream for the gateway tests: a bare ASGI app, run as a registered keel Service.

Paths (any method):

- anything not below: JSON echo ``{"tag", "port", "method", "path", "raw_path",
  "query", "headers": [[name, value], ...], "body_bytes", "body"}`` (``body`` is
  the text when it is at most 64 KiB, else null); the request body is counted
  as it streams in, never held whole;
- ``/stream/<n>``: ``n`` bytes of ``b"x"`` in 64 KiB chunks (``?chunk=`` changes it);
- ``/sse?n=5&interval=0.01``: ``n`` server-sent events ``data: <i>``;
- ``/slow?s=1``: the echo after ``s`` seconds;
- ``/status/<code>``: the echo with that status;
- websocket ``/ws``: echoes every text and bytes message until the client closes.

Run it in process with :func:`upstream` (``async with upstream(store, "users",
version="v2") as service``) or as a child process with :func:`start_child`
(``python -m tests.gateway._upstream_app NAME STORE_URL [--version V]
[--meta k=v]... [--port N] [--tag T]``, which prints ``READY <port> <id>`` once
registered and ``STOPPED`` after a clean drain; SIGTERM drains as any Service).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry

from keel.observe import HttpMetrics
from keel.service import Service, ServiceSettings
from keel.store import Store
from tests._procs import Child, Children

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_BODY_TEXT_LIMIT = 64 * 1024
_JSON = [(b"content-type", b"application/json")]


def make_app(tag: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The upstream ASGI app; ``tag`` comes back in every echo (which upstream answered)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket":
            await _ws_echo(receive, send)
        else:
            await _http(tag, scope, receive, send)

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(tag: str, scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if path.startswith("/stream/"):
        await _drain(receive)
        await _stream(int(path.rsplit("/", 1)[1]), int(query.get("chunk", ["65536"])[0]), send)
        return
    if path == "/sse":
        await _drain(receive)
        await _sse(int(query.get("n", ["5"])[0]), float(query.get("interval", ["0.01"])[0]), send)
        return
    status = 200
    if path == "/slow":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
    size, head = await _count_body(receive)
    echo = {
        "tag": tag,
        "port": (scope.get("server") or ("", 0))[1],
        "method": scope["method"],
        "path": path,
        "raw_path": (scope.get("raw_path") or path.encode()).decode("latin-1"),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_bytes": size,
        "body": head.decode("utf-8", "replace") if size <= _BODY_TEXT_LIMIT else None,
    }
    body = json.dumps(echo).encode()
    headers = [*_JSON, (b"content-length", str(len(body)).encode()), (b"x-upstream", tag.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _count_body(receive: Receive) -> tuple[int, bytes]:
    """The body's size, and its first 64 KiB (the rest is counted, not kept)."""
    size, head = 0, bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if len(head) <= _BODY_TEXT_LIMIT:
            head += chunk[: _BODY_TEXT_LIMIT + 1 - len(head)]
        if not message.get("more_body", False):
            break
    return size, bytes(head)


async def _drain(receive: Receive) -> None:
    await _count_body(receive)


async def _stream(n: int, chunk: int, send: Send) -> None:
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(n).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    block = b"x" * chunk
    left = n
    while left > 0:
        part = block if left >= chunk else block[:left]
        left -= len(part)
        await send({"type": "http.response.body", "body": part, "more_body": left > 0})
    if n == 0:
        await send({"type": "http.response.body", "body": b""})


async def _sse(n: int, interval: float, send: Send) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(n):
        event = f"id: {i}\ndata: {i}\n\n".encode()
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await asyncio.sleep(interval)
    await send({"type": "http.response.body", "body": b""})


async def _ws_echo(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def settings(
    *,
    version: str = "",
    metadata: Mapping[str, str] | None = None,
    port: int = 0,
    drain_delay_s: float = 0.3,
) -> ServiceSettings:
    """Quick-draining service settings for an upstream instance."""
    return ServiceSettings(
        port=port,
        version=version,
        metadata=dict(metadata or {}),
        drain_delay_s=drain_delay_s,
        grace_s=5.0,
    )


@contextlib.asynccontextmanager
async def upstream(
    store: Store | str,
    name: str = "users",
    *,
    version: str = "",
    metadata: Mapping[str, str] | None = None,
    tag: str | None = None,
    port: int = 0,
    drain_delay_s: float = 0.05,
) -> AsyncIterator[Service]:
    """An upstream instance in this process, registered as ``name`` (own metrics registry)."""
    registry = CollectorRegistry()
    service = Service(
        name,
        make_app(tag or f"{name}:{version or '-'}"),
        store=store,
        settings=settings(
            version=version, metadata=metadata, port=port, drain_delay_s=drain_delay_s
        ),
        metrics=HttpMetrics(registry),
        registry=registry,
    )
    async with service:
        yield service


async def start_child(
    children: Children,
    name: str,
    store_url: str,
    *,
    version: str = "",
    metadata: Mapping[str, str] | None = None,
    tag: str | None = None,
    port: int = 0,
) -> tuple[Child, int, str]:
    """An upstream instance in a child process; returns (child, port, instance id) once ready."""
    args: list[object] = [name, store_url, "--port", port]
    if version:
        args += ["--version", version]
    if tag:
        args += ["--tag", tag]
    for key, value in (metadata or {}).items():
        args += ["--meta", f"{key}={value}"]
    child = await children.start("tests.gateway._upstream_app", *args)
    fields = await child.expect("READY", 30)
    return child, int(fields[0]), fields[1]


async def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("store_url")
    parser.add_argument("--version", default="")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--meta", action="append", default=[])
    args = parser.parse_args(argv)
    metadata = dict(item.split("=", 1) for item in args.meta)
    service = Service(
        args.name,
        make_app(args.tag or f"{args.name}:{args.version or '-'}"),
        store=args.store_url,
        settings=settings(version=args.version, metadata=metadata, port=args.port),
    )

    async def announce() -> None:
        await service.ready.wait()
        print("READY", service.port, service.instance_id, flush=True)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(announce())
        await service.serve()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    asyncio.run(_main())

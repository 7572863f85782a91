"""WebSocket pass-through: the client's ASGI WebSocket to an upstream instance's.

The upstream side is a ``websockets`` client connection (the library does the
handshake, framing, masking, ping/pong and the closing handshake); the client
side is the ASGI server's. Each message is relayed as it comes, text as text
and bytes as bytes; a close on either side closes the other with the same code
and reason. The upstream is picked like an HTTP request's (balancer, breaker,
another instance when a connect fails), and the client is accepted only once
the upstream accepted, with the subprotocol the upstream chose; when no
upstream accepts, the client gets 502 (servers with the ASGI
``websocket.http.response`` extension) or a refused handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from keel.gateway._exchange import UpstreamError

if TYPE_CHECKING:
    from keel.gateway._pick import Target
    from keel.gateway._proxy import Upstreams

__all__ = ["pass_through"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MAX_MESSAGE = 16 * 1024 * 1024  # uvicorn's default ws_max_size
# Handshake headers the websockets client writes itself.
_OWN = frozenset(
    {
        b"host",
        b"connection",
        b"upgrade",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"user-agent",
    }
)
_CLOSE_WAIT_S = 2.0
# Codes a peer may not put in a close frame (RFC 6455 §7.4.1).
_RESERVED = frozenset({1005, 1006, 1015})


async def pass_through(
    u: Upstreams,
    target: Target,
    path_qs: bytes,
    headers: list[tuple[bytes, bytes]],
    receive: Receive,
    send: Send,
) -> None:
    """Relay one WebSocket session between the client and an instance of ``target``."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    protocols = [
        p.strip()
        for name, value in headers
        if name == b"sec-websocket-protocol"
        for p in value.decode("latin-1").split(",")
    ]
    extra = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in _OWN]
    try:
        upstream = await _connect(u, target, path_qs, extra, protocols)
    except UpstreamError as exc:
        await _refuse(send, exc.status, exc.detail)
        return
    async with upstream:
        accept: Message = {"type": "websocket.accept"}
        if upstream.subprotocol is not None:
            accept["subprotocol"] = upstream.subprotocol
        await send(accept)
        await _relay(upstream, receive, send)


async def _connect(
    u: Upstreams, target: Target, path_qs: bytes, extra: list[tuple[str, str]], protocols: list[str]
) -> ClientConnection:
    candidates = await u.picker.instances(target)
    tried: set[str] = set()
    attempts = 1 + max(0, target.retries)
    u.budget.deposit()
    for attempt in range(1, attempts + 1):
        instance, gate, ticket = u.picker.choose(target, candidates, tried)
        scheme = "wss" if instance.scheme == "https" else "ws"
        base = getattr(instance, "base_path", b"")
        uri = f"{scheme}://{instance.address}:{instance.port}{(base + path_qs).decode('latin-1')}"
        try:
            conn = await connect(
                uri,
                additional_headers=extra,
                subprotocols=protocols or None,  # type: ignore[arg-type]
                compression=None,
                proxy=None,
                open_timeout=min(target.timeout_s, 30.0),
                max_size=_MAX_MESSAGE,
                user_agent_header=None,
            )
        except InvalidStatus as exc:
            ticket.failed()
            gate.failed()
            raise UpstreamError(502, f"upstream refused the WebSocket: {exc}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            ticket.failed()
            gate.failed()
            tried.add(instance.id)
            if attempt < attempts and u.retried(target):
                continue
            raise UpstreamError(502, f"cannot open a WebSocket to {uri}: {exc}") from exc
        ticket.succeeded()
        gate.succeeded()
        return conn
    raise UpstreamError(502, "no upstream accepted the WebSocket")  # pragma: no cover


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"error": "bad_gateway", "detail": detail}).encode()
    with contextlib.suppress(Exception):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1011})


async def _relay(upstream: ClientConnection, receive: Receive, send: Send) -> None:
    loop = asyncio.get_running_loop()
    up = loop.create_task(_to_upstream(upstream, receive))
    down = loop.create_task(_to_client(upstream, send))
    try:
        await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        if up.done() and not down.done():
            # The upstream refused a message because it is closing: let the
            # client hear its close code before giving up on it.
            await asyncio.wait((down,), timeout=_CLOSE_WAIT_S)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


async def _to_upstream(upstream: ClientConnection, receive: Receive) -> None:
    """Client → upstream until the client leaves; then close upstream with its code."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            try:
                await upstream.send(text if text is not None else (message.get("bytes") or b""))
            except ConnectionClosed:
                return
        elif kind == "websocket.disconnect":
            code = message.get("code", 1000)
            reason = message.get("reason") or ""
            await upstream.close(1000 if code in _RESERVED else code, reason)
            return


async def _to_client(upstream: ClientConnection, send: Send) -> None:
    """Upstream → client until the upstream closes; then close the client with its code."""
    try:
        async for data in upstream:
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})
    except ConnectionClosed:
        pass
    rcvd = upstream.protocol.close_rcvd
    code = rcvd.code if rcvd is not None else 1011
    reason = rcvd.reason if rcvd is not None else "upstream connection lost"
    with contextlib.suppress(Exception):
        await send(
            {
                "type": "websocket.close",
                "code": 1000 if code in _RESERVED else code,
                "reason": reason,
            }
        )

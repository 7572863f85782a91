"""The Python the gateway's relay runs per request, without sockets: steadier than wrk.

    python bench/relay_python.py               # 200,000 requests, best of 5
    python bench/relay_python.py --requests 50000 --repeat 3
    python bench/relay_python.py --secure      # the route with JWT auth and a rate limit

A real :class:`keel.gateway.Gateway` runs in this process on a memory store
with the route of ``bench/gateway.py``, but its server protocol is given a
transport that records what it is asked to write, and its upstream pool
holds connections whose transports do the same. Each request is the bytes
wrk sends, fed to the protocol; the upstream request head the relay writes
is answered with uvicorn's hello response, fed to the upstream connection;
the answer to the client is checked once. What is timed is everything the
gateway's Python does for a relayed request (parsing both sides, the route,
the pick, the breaker, the deadline, the metrics, both heads) and one pass
of the event loop for each side's end-of-pass writes: no system calls, so
the figure moves far less with other work on the machine than a wrk run
does. Compare it with the same measurement of a bare httptools parser, the
least any server side can cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import time
from typing import Any

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Dec 2026 15:02:11 GMT\r\nserver: uvicorn\r\n"
    b"content-type: text/plain\r\ncontent-length: 13\r\n\r\nHello, world!"
)
ROUTES: dict[str, Any] = {
    "routes": [{"id": "plain", "match": {"path": "/"}, "forward": {"service": "hello"}}]
}


def secure_routes(tmp: str) -> tuple[dict[str, Any], bytes]:
    """``bench/gateway.py``'s JWT + rate limit route, and wrk's request for it (a valid token)."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from gateway import _routes  # bench/gateway.py: the same document

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = Path(tmp) / "public.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    claims = {"sub": "bench", "aud": "bench", "iss": "https://id.example"}
    token = jwt.encode({**claims, "exp": time.time() + 3600}, key, algorithm="RS256")
    request = (
        b"GET /secure/ HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    return _routes(str(pem)), request


class Recording:
    """A transport that keeps what is written to it."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def measure(requests: int, repeat: int, secure: bool = False) -> dict[str, float]:
    import tempfile

    import uvicorn
    import yaml
    from prometheus_client import CollectorRegistry

    import keel
    from keel.config import ConfigCenter
    from keel.gateway import Gateway
    from keel.gateway._h1 import Connection
    from keel.gateway._serving import relaying_protocol
    from keel.registry import Instance, Registry
    from keel.service import ServiceSettings

    loop = asyncio.get_running_loop()
    store = await keel.connect("memory://")
    tmp = tempfile.TemporaryDirectory()
    routes, request = secure_routes(tmp.name) if secure else (ROUTES, REQUEST)
    await ConfigCenter(store).publish("gateway.yaml", yaml.safe_dump(routes))
    settings = ServiceSettings(drain_delay_s=0.05, grace_s=1.0)
    async with (
        Registry(store) as registry,
        Gateway(
            store, port=0, registry=CollectorRegistry(), settings=settings, access_log=False
        ) as gw,
    ):
        # a listener, never connected to (the pool holds a connection to it already)
        listener = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        await registry.register(Instance(service="hello", address="127.0.0.1", port=port))
        assert gw.relay is not None and gw.upstreams is not None and gw.app is not None
        for _ in range(200):  # the gateway's discovery learns of it through its watch
            if await gw.upstreams.discovery.instances("hello"):
                break
            await asyncio.sleep(0.01)
        key = ("http", "127.0.0.1", port)
        upstream = Connection(key, loop)
        upstream.connection_made(Recording(("127.0.0.1", port)))  # type: ignore[arg-type]
        pool = gw.upstreams.pool
        upstream.idle_since = time.monotonic()
        pool._idle[key] = [upstream]
        pool._open[key] = 1
        config = uvicorn.Config(app=gw.app, http="httptools", access_log=False)
        config.load()
        client = Recording(("127.0.0.1", 50000))
        protocol = relaying_protocol(gw.relay)(
            config=config, server_state=uvicorn.server.ServerState(), app_state={}
        )
        protocol.connection_made(client)  # type: ignore[arg-type]
        up_writes: list[bytes] = upstream.transport.writes  # type: ignore[union-attr]

        async def one() -> None:
            protocol.data_received(request)
            await asyncio.sleep(0)  # the end-of-pass write of the upstream head
            upstream.data_received(RESPONSE)
            await asyncio.sleep(0)  # the end-of-pass write of the answer

        await one()
        assert up_writes and up_writes[-1].startswith(b"GET /"), up_writes
        assert client.writes and client.writes[-1].endswith(b"Hello, world!"), client.writes
        relayed = gw.relay.relayed
        best = float("inf")
        for _ in range(repeat):
            up_writes.clear()
            client.writes.clear()
            start = time.perf_counter()
            for _ in range(requests):
                await one()
            best = min(best, (time.perf_counter() - start) / requests)
        assert gw.relay.relayed - relayed == requests * repeat, "a request left the relay"
        floor = await _loop_floor(requests, repeat)
        listener.close()
    await store.close()
    tmp.cleanup()
    return {"relay_us": best * 1e6, "loop_passes_us": floor * 1e6}


async def _loop_floor(requests: int, repeat: int) -> float:
    """The two loop passes of each timed request, alone."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(requests):
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        best = min(best, (time.perf_counter() - start) / requests)
    return best


def bare_parser(requests: int, repeat: int) -> float:
    """A bare httptools request parser collecting method, URL and headers."""
    import httptools

    class Bare:
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []

        def on_message_begin(self) -> None:
            self.url, self.headers = b"", []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

    bare = Bare()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(requests):
            bare.parser.feed_data(REQUEST)
        best = min(best, (time.perf_counter() - start) / requests)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--secure", action="store_true", help="the JWT + rate limit route")
    args = parser.parse_args()
    import logging

    import uvloop

    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

    result = uvloop.run(measure(args.requests, args.repeat, args.secure))
    relay, passes = result["relay_us"], result["loop_passes_us"]
    print(f"relayed request, best of {args.repeat} x {args.requests}: {relay:.2f} us")
    print(f"  of which two bare loop passes: {passes:.2f} us")
    print(f"  the relay's own Python: {relay - passes:.2f} us")
    print(f"a bare httptools parser, for scale: {bare_parser(args.requests, args.repeat):.2f} us")


if __name__ == "__main__":
    main()

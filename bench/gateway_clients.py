"""The upstream HTTP clients a proxy could use, compared: httpx, httpcore, keel's own.

    python bench/gateway_clients.py [--runs 3] [--duration 2]

One process under uvloop runs 32 concurrent loops of keep-alive GETs of a
13-byte hello from a uvicorn upstream (1 worker; the same child as
``bench/gateway.py``) through ``httpx.AsyncHTTPTransport``, an
``httpcore.AsyncConnectionPool`` and ``keel.gateway._pool.Pool`` with its
``_h1.Connection``; prints the median requests per second of each. The
numbers in ``keel/gateway/_h1.py``'s docstring come from here. A
measurement, never asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from gateway import child, free_port, wait_port


async def _client_rate(kind: str, port: int, duration_s: float, concurrency: int) -> float:
    """GETs per second from ``concurrency`` loops through one client kind."""
    url = f"http://127.0.0.1:{port}/"
    done = 0
    end = time.perf_counter() + duration_s
    if kind == "httpx":
        import httpx

        transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)
        )

        async def one() -> None:
            response = await transport.handle_async_request(httpx.Request("GET", url))
            await response.aread()
            assert response.status_code == 200

        closer: Any = transport.aclose
    elif kind == "httpcore":
        import httpcore

        pool = httpcore.AsyncConnectionPool(max_connections=64, max_keepalive_connections=64)

        async def one() -> None:
            response = await pool.request("GET", url)
            assert response.status == 200

        closer = pool.aclose
    else:
        from keel.gateway._pool import Pool

        kpool = Pool(
            max_per_instance=64,
            max_idle_per_instance=64,
            idle_timeout_s=4.0,
            connect_timeout_s=2.0,
        )
        key = ("http", "127.0.0.1", port)
        head = f"GET / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode()

        async def one() -> None:
            conn = await kpool.acquire(key)
            conn.write(head)
            await conn.read_head()
            while await conn.read_chunk():
                pass
            assert conn.status == 200
            kpool.release(conn)

        async def close_kpool() -> None:
            kpool.close()

        closer = close_kpool

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await one()
            done += 1

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(concurrency):
            tasks.create_task(loop())
    elapsed = time.perf_counter() - start
    await closer()
    return done / elapsed


def compare_clients(args: argparse.Namespace) -> None:
    """Requests/s of httpx, httpcore and keel's own HTTP/1.1 client against one upstream."""
    import uvloop

    port = free_port()
    rates: dict[str, list[float]] = {}
    with child("--serve-hello", str(port)):
        wait_port(port)
        for _ in range(args.runs):
            for kind in ("httpx", "httpcore", "keel-h1"):
                rate = uvloop.run(_client_rate(kind, port, args.duration, 32))
                rates.setdefault(kind, []).append(rate)
    print(f"\nupstream clients, 32 concurrent GETs, medians of {args.runs} x {args.duration:g} s")
    for kind, values in rates.items():
        print(f"{kind:10} {statistics.median(values):10.0f} req/s")
    print(json.dumps({k: statistics.median(v) for k, v in rates.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    compare_clients(parser.parse_args())


if __name__ == "__main__":
    main()

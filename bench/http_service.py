"""Service runtime and HTTP client throughput, side by side in one run.

    python bench/http_service.py                 # needs wrk (Debian: apt-get install -y wrk)
    python bench/http_service.py --duration 10 --requests 10000

1. hello world with ``wrk -t2 -c100``: the same ASGI app on bare uvicorn
   (uvloop + httptools, one worker) and through ``keel.service.Service``
   (registration, probes, metrics, deadline and trace middleware).
   Target: Service >= 0.9x bare uvicorn.
2. client: ``requests`` GETs, 32 in flight, through ``keel.http.Client`` to 2
   Service instances by name, and through plain ``httpx.AsyncClient`` to one
   fixed URL. Target: keel >= 0.8x plain httpx.
3. the counter service (``/incr`` doing Redis INCR) through Service, with
   ``wrk -t2 -c100 -d10s``: one redis-py call per request, and concurrent
   INCRs pipelined into one round trip (hiredis parser). Anchor: 8,500 req/s.

Every server runs in its own process; all on loopback. Prints a table and one
JSON document. A measurement, not a test.
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
import uvloop

import keel
from keel.http import Client
from keel.service import Service, ServiceSettings
from keel.testing import RedisServer, free_port

HELLO = b"Hello, World!"


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app: 200 and a fixed body."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": HELLO})


class Pipeliner:
    """Concurrent INCRs sent as one pipeline per event-loop turn (one round trip for all)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pending: list[tuple[str, asyncio.Future[int]]] = []
        self.flushing: set[asyncio.Task[None]] = set()

    async def incr(self, key: str) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append((key, future))
        if len(self.pending) == 1:
            task = asyncio.ensure_future(self._flush())
            self.flushing.add(task)
            task.add_done_callback(self.flushing.discard)
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let this turn's other requests join the batch
        batch, self.pending = self.pending, []
        pipe = self.client.pipeline(transaction=False)
        for key, _ in batch:
            pipe.incr(key)
        try:
            results = await pipe.execute()
        except Exception as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), value in zip(batch, results, strict=True):
            future.set_result(int(value))


def counter_app(redis_url: str, pipelined: bool) -> Any:
    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                state["redis"] = aioredis.from_url(redis_url, max_connections=200)
                state["pipe"] = Pipeliner(state["redis"])
                await send({"type": "lifespan.startup.complete"})
            await state["redis"].aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if pipelined:
            value = await state["pipe"].incr("counter")
        else:
            value = await state["redis"].incr("counter")
        body = str(value).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def serve(kind: str, port: int, store: str, redis_url: str) -> None:
    """Child mode: run one server until SIGTERM."""
    if kind == "uvicorn":
        uvicorn.run(
            hello, port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
        )
        return
    app = hello if kind == "service" else counter_app(redis_url, kind == "counter-pipelined")
    settings = ServiceSettings(port=port, drain_delay_s=0.0, grace_s=1.0)
    uvloop.run(Service(kind.split("-")[0], app, store=store, settings=settings).serve())


@contextlib.contextmanager
def server(kind: str, store: str, redis_url: str = "") -> Any:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(port), store, redis_url],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.1)
        if kind != "uvicorn":
            time.sleep(0.3)  # registered after readiness
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wrk(url: str, duration: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", "-c100", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": p99_ms, "non_2xx": int(errors.group(1)) if errors else 0}


async def drive(client: httpx.AsyncClient, url: str, requests: int, in_flight: int) -> float:
    left = [requests]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            answer = await client.get(url)
            assert answer.status_code == 200

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(in_flight):
            tasks.create_task(worker())
    return requests / (time.perf_counter() - start)


async def client_bench(store_url: str, requests: int) -> dict[str, float]:
    results: dict[str, float] = {"keel": 0.0, "httpx": 0.0}
    with server("service", store_url) as first, server("service", store_url):
        async with (
            keel.connect(store_url) as store,
            Client(store) as keel_client,
            httpx.AsyncClient() as plain,
        ):
            await drive(keel_client, "http://service/", 500, 32)  # warm-up
            await drive(plain, first + "/", 500, 32)
            for _ in range(2):
                rate = await drive(keel_client, "http://service/", requests, 32)
                results["keel"] = max(results["keel"], rate)
                rate = await drive(plain, first + "/", requests, 32)
                results["httpx"] = max(results["httpx"], rate)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="wrk seconds for hello world")
    parser.add_argument("--counter-duration", type=int, default=10)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, port, store, redis_url = args.serve
        serve(kind, int(port), store, redis_url)
        return
    if shutil.which("wrk") is None:
        sys.exit("bench/http_service.py needs wrk: apt-get install -y wrk")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis_server:
        store = f"sqlite:///{tmp}/keel.db"
        hello_runs: dict[str, dict[str, float]] = {}
        for kind in ("uvicorn", "service", "uvicorn", "service"):
            with server(kind, store) as url:
                wrk(url + "/", 1)  # warm-up
                run = wrk(url + "/", args.duration)
                if run["rps"] > hello_runs.get(kind, {"rps": 0.0})["rps"]:
                    hello_runs[kind] = run
        out["hello"] = {
            **hello_runs,
            "ratio": hello_runs["service"]["rps"] / hello_runs["uvicorn"]["rps"],
        }
        rates = uvloop.run(client_bench(store, args.requests))
        out["client"] = {**rates, "ratio": rates["keel"] / rates["httpx"]}
        counter: dict[str, dict[str, float]] = {}
        for kind in ("counter-plain", "counter-pipelined"):
            with server(kind, store, redis_server.url) as url:
                wrk(url + "/incr", 1)
                counter[kind] = wrk(url + "/incr", args.counter_duration)
        out["counter"] = counter
    h, c = out["hello"], out["client"]
    print(f"{'benchmark':<44}{'req/s':>10}{'p99 ms':>9}")
    print(
        f"{'hello, bare uvicorn (uvloop+httptools)':<44}{h['uvicorn']['rps']:>10.0f}"
        f"{h['uvicorn']['p99_ms']:>9.2f}"
    )
    print(
        f"{'hello, keel Service':<44}{h['service']['rps']:>10.0f}{h['service']['p99_ms']:>9.2f}"
        f"   {h['ratio']:.2f}x (target >= 0.9x)"
    )
    print(f"{'client, plain httpx to one URL':<44}{c['httpx']:>10.0f}")
    print(
        f"{'client, keel.http.Client to 2 instances':<44}{c['keel']:>10.0f}"
        f"{'':>9}   {c['ratio']:.2f}x (target >= 0.8x)"
    )
    for kind, run in out["counter"].items():
        label = f"counter /incr via Service ({kind.split('-')[1]})"
        print(f"{label:<44}{run['rps']:>10.0f}{run['p99_ms']:>9.2f}   (anchor 8,500)")
    print(json.dumps({"bench": "http", "results": out}))


if __name__ == "__main__":
    main()

"""gRPC throughput, keel beside the plain grpc.aio peer in one run.

    python bench/grpc_channel.py                       # every part
    python bench/grpc_channel.py --parts channel --runs 7 --calls 20000

1. channel: unary calls/s, 64 in flight, from one client process:
   ``keel.grpc.Channel(store, "echo")`` by name to 2 instances against a plain
   ``grpc.aio.insecure_channel`` to one fixed address of the same servers.
   Runs are interleaved (plain, keel, plain, keel...) and the medians
   compared. Target: keel >= 0.85x plain. The servers limit both sides
   there (keel spreads over two), so a third row shows the client's own cost:
   a keel Channel with ``target_override`` to the same one address.

The servers are keel.grpc.Server processes serving ``keel.test.Echo``
(``tests/grpc/echo.proto``) registered in a sqlite store; all on loopback.
Prints a table and one JSON document. A measurement, not a test.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout: the generated test and example gRPC code

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
from tests.grpc import echo_pb2, echo_pb2_grpc  # noqa: E402
from tests.grpc._echo import EchoService  # noqa: E402

import keel  # noqa: E402
from keel.grpc import Channel, Server  # noqa: E402

IN_FLIGHT = 64


def serve(name: str, store: str) -> None:
    """Child process: one keel.grpc.Server instance of ``echo``; prints its port when ready."""

    async def main() -> None:
        server = Server("echo", store=store, port=0, host="127.0.0.1", reflection=False)
        server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService(name))

        async def announce() -> None:
            await server.ready.wait()
            print(server.port, flush=True)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(announce())
            await server.serve()

    asyncio.run(main())


@contextlib.contextmanager
def servers(store: str, n: int) -> Iterator[list[int]]:
    """``n`` Echo server processes; yields their ports."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", f"s{i}", store],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "KEEL_SERVICE_DRAIN_DELAY_S": "0", "KEEL_LOG_LEVEL": "WARNING"},
        )
        for i in range(n)
    ]
    try:
        ports = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("a server process ended before it was ready")
            ports.append(int(line))
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


async def drive(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    """Calls per second of ``calls`` unary calls, ``IN_FLIGHT`` at a time."""
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(IN_FLIGHT):
            tasks.create_task(worker())
    return calls / (time.perf_counter() - start)


async def channel_bench(store_url: str, port: int, calls: int, runs: int) -> dict[str, Any]:
    """Interleaved runs of a plain channel to ``port`` and a keel Channel by name."""
    request = echo_pb2.EchoRequest(text="x")
    results: dict[str, list[float]] = {"plain": [], "keel": [], "keel_one": []}
    async with (
        keel.connect(store_url) as store,
        Channel(store, "echo") as by_name,
        Channel(None, "echo", target_override=f"127.0.0.1:{port}") as one,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain,
    ):
        stubs = {
            "plain": echo_pb2_grpc.EchoStub(plain),
            "keel": echo_pb2_grpc.EchoStub(by_name),
            "keel_one": echo_pb2_grpc.EchoStub(one),
        }
        for stub in stubs.values():  # connect and warm up
            await drive(lambda stub=stub: stub.Unary(request, timeout=10), 2000)
        for _ in range(runs):
            for label, stub in stubs.items():
                rate = await drive(lambda stub=stub: stub.Unary(request, timeout=10), calls)
                results[label].append(rate)
        spread = by_name.statistics()
    plain_rate = statistics.median(results["plain"])
    keel_rate = statistics.median(results["keel"])
    one_rate = statistics.median(results["keel_one"])
    return {
        "plain_calls_per_s": round(plain_rate),
        "keel_calls_per_s": round(keel_rate),
        "keel_one_calls_per_s": round(one_rate),
        "ratio": round(keel_rate / plain_rate, 3),
        "ratio_one_address": round(one_rate / plain_rate, 3),
        "target": 0.85,
        "runs": {k: [round(v) for v in vs] for k, vs in results.items()},
        "keel_failures": spread.failures,
    }


def report(out: dict[str, Any]) -> None:
    """A table, then the JSON document."""
    if "channel" in out:
        c = out["channel"]
        print(f"{'unary calls/s, 64 in flight':<34}{'median':>10}")
        print(f"{'plain grpc.aio, one address':<34}{c['plain_calls_per_s']:>10}")
        print(f"{'keel.grpc.Channel by name (2)':<34}{c['keel_calls_per_s']:>10}")
        print(f"{'keel.grpc.Channel, one address':<34}{c['keel_one_calls_per_s']:>10}")
        print(f"{'ratio keel / plain':<34}{c['ratio']:>10} (target >= {c['target']})")
        print(f"{'ratio keel one address / plain':<34}{c['ratio_one_address']:>10}")
    print(json.dumps(out, indent=2))


def main() -> None:
    """Parse arguments and run the parts asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="channel", help="comma-separated: channel")
    parser.add_argument("--calls", type=int, default=10_000, help="calls per run")
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs per side")
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    parts = set(args.parts.split(","))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/keel.db"
        if "channel" in parts:
            with servers(store, 2) as ports:
                out["channel"] = asyncio.run(channel_bench(store, ports[0], args.calls, args.runs))
    report(out)


if __name__ == "__main__":
    main()

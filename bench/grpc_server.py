"""gRPC server overhead: keel.grpc.Server beside a bare grpc.aio.server(), same servicer.

    python bench/grpc_server.py                    # 5 interleaved runs of 10,000 calls each
    python bench/grpc_server.py --runs 7 --calls 20000 --access-log

Both servers serve ``tests.grpc._echo.EchoService`` (keel.test.Echo) from
their own process. The load generator is a third process, the same for both:
a plain ``grpc.aio`` channel, unary calls, 64 in flight, latency of every
call. Runs are interleaved (bare, keel, bare, keel...), each with a fresh
load-generator process, after one warm-up run per server; medians compared.
Targets: keel >= 0.9x the bare server's calls/s, p99 <= 1.2x.

The keel server runs with its interceptor (deadline, trace context, metrics)
and health and reflection registered; no tracing SDK is configured and the
access log is off (the ``keel.grpc.access`` logger below INFO) unless
``--access-log`` turns it on (then lines go to /dev/null through logging).
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
import logging  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
from tests.grpc import echo_pb2, echo_pb2_grpc  # noqa: E402
from tests.grpc._echo import EchoService  # noqa: E402

IN_FLIGHT = 64


async def _serve_bare() -> None:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(EchoService("bare"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def _serve_keel(store: str, access_log: bool) -> None:
    from keel.grpc import Server

    if access_log:
        handler = logging.FileHandler(os.devnull)
        logging.getLogger("keel.grpc.access").addHandler(handler)
        logging.getLogger("keel.grpc.access").setLevel(logging.INFO)
    server = Server("echo", store=store, port=0, host="127.0.0.1")
    server.add(echo_pb2_grpc.add_EchoServicer_to_server, EchoService("keel"))

    async def announce() -> None:
        await server.ready.wait()
        print(server.port, flush=True)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(announce())
        await server.serve()


async def _load(port: int, calls: int) -> dict[str, float]:
    """The load generator: ``calls`` unary calls, 64 in flight; rate and latency quantiles."""
    request = echo_pb2.EchoRequest(text="x")
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                start = time.perf_counter()
                await stub.Unary(request, timeout=10)
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for _ in range(IN_FLIGHT):
                tasks.create_task(worker())
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "calls_per_s": calls / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _server(kind: str, store: str, access_log: bool) -> Iterator[tuple[int, int]]:
    command = [sys.executable, __file__, "--serve", kind, store]
    if access_log:
        command.append("--access-log")
    env = {**os.environ, "KEEL_SERVICE_DRAIN_DELAY_S": "0"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {kind} server ended before it was ready")
        yield int(line), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _run_load(server: tuple[int, int], calls: int) -> dict[str, float]:
    port, pid = server
    cpu = _cpu_s(pid)
    done = subprocess.run(
        [sys.executable, __file__, "--load", str(port), str(calls)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = json.loads(done.stdout)
    # CPU per call is what the server's code costs; it moves far less than
    # calls/s when other processes share the cores.
    result["server_cpu_us_per_call"] = (_cpu_s(pid) - cpu) / calls * 1e6
    return result


def bench(calls: int, runs: int, access_log: bool) -> dict[str, Any]:
    """Interleaved runs against both servers; medians and ratios."""
    results: dict[str, list[dict[str, float]]] = {"bare": [], "keel": []}
    with (
        tempfile.TemporaryDirectory() as tmp,
        _server("bare", "", False) as bare,
        _server("keel", f"sqlite:///{tmp}/keel.db", access_log) as keel_server,
    ):
        ports = {"bare": bare, "keel": keel_server}
        for port in ports.values():
            _run_load(port, min(calls, 3000))  # warm-up
        for _ in range(runs):
            for label, port in ports.items():
                results[label].append(_run_load(port, calls))

    def median(label: str, field: str) -> float:
        return statistics.median(r[field] for r in results[label])

    out: dict[str, Any] = {
        label: {
            field: round(median(label, field), 3)
            for field in ("calls_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_call")
        }
        for label in results
    }
    rate = median("keel", "calls_per_s") / median("bare", "calls_per_s")
    out["ratio_calls_per_s"] = round(rate, 3)
    out["ratio_p99"] = round(median("keel", "p99_ms") / median("bare", "p99_ms"), 3)
    cpu = median("keel", "server_cpu_us_per_call") / median("bare", "server_cpu_us_per_call")
    out["ratio_server_cpu_per_call"] = round(cpu, 3)
    out["targets"] = {"ratio_calls_per_s": ">= 0.9", "ratio_p99": "<= 1.2"}
    out["access_log"] = access_log
    out["runs"] = {label: [round(r["calls_per_s"]) for r in rs] for label, rs in results.items()}
    return out


def report(out: dict[str, Any]) -> None:
    """A table, then the JSON document."""
    print(f"{'unary, 64 in flight':<26}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/call':>13}")
    for label, title in (("bare", "bare grpc.aio.server()"), ("keel", "keel.grpc.Server")):
        r = out[label]
        print(
            f"{title:<26}{r['calls_per_s']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['server_cpu_us_per_call']:>13.1f}"
        )
    print(
        f"{'ratio keel / bare':<26}{out['ratio_calls_per_s']:>9}{'':>9}{out['ratio_p99']:>9}"
        f"{out['ratio_server_cpu_per_call']:>13}"
    )
    print(json.dumps(out, indent=2))


def main() -> None:
    """Parse arguments; run the benchmark, or one of its child roles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls per run")
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs per server")
    parser.add_argument("--access-log", action="store_true", help="keel logs every call")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "STORE"), help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, store = args.serve
        asyncio.run(_serve_bare() if kind == "bare" else _serve_keel(store, args.access_log))
    elif args.load:
        print(json.dumps(asyncio.run(_load(*args.load))))
    else:
        report(bench(args.calls, args.runs, args.access_log))


if __name__ == "__main__":
    main()

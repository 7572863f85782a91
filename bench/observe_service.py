"""What metrics and spans cost on an HTTP request served by a keel Service, over a socket.

    python bench/observe_service.py [--rounds 5] [--duration 3]

Three Services run as separate processes on a memory store, each serving a
Starlette hello route: ``off`` (HTTP and store series off), ``metrics`` (the
default) and ``traced`` (metrics, plus an OpenTelemetry SDK provider whose
exporter drops every span, so every request records a SERVER span). ``wrk
-t1 -c16`` loads each for ``--duration`` seconds, rounds interleaved so
machine noise hits them alike.

Two figures per set-up: requests per second, and the server's CPU
microseconds per request (user + system from ``/proc/<pid>/stat``), which
moves far less than throughput when other work shares the machine. The
overhead is each against ``off``, from the medians over the rounds. Nothing
is asserted. ``bench/observe.py`` has the in-process view (store calls,
locks, the middleware alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

MODES = ("off", "metrics", "traced")


async def _serve(mode: str) -> None:
    """Child: serve ``/hello`` in ``mode`` and print the port once ready."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from keel.observe import store_metrics
    from keel.service import Service

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("Hello, world!")

    provider = None
    if mode == "traced":
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Drop()))
    store_metrics().enabled = mode != "off"
    app = Starlette(routes=[Route("/hello", hello)])
    service = Service(f"bench-{mode}", app, store="memory://", port=0, tracer_provider=provider)
    service.app.observe_http = mode != "off"
    serving = asyncio.create_task(service.serve())
    await service.ready.wait()
    print(service.port, flush=True)
    await serving


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(port: int, duration: int) -> tuple[float, float]:
    """wrk against ``port``: (requests per second, requests)."""
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{duration}s", f"http://127.0.0.1:{port}/hello"],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, total


def _start(mode: str) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.strip().isdigit():
        child.kill()
        raise SystemExit(f"the {mode} service did not start")
    return child, int(line)


def measure(rounds: int, duration: int) -> dict[str, dict[str, float]]:
    """Median requests/s and server CPU us per request of each mode."""
    children = {mode: _start(mode) for mode in MODES}
    rps: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for _, port in children.values():  # warm-up
            _load(port, 1)
        for r in range(rounds):
            for mode in MODES[r % 3 :] + MODES[: r % 3]:
                child, port = children[mode]
                before = _cpu_s(child.pid)
                rate, total = _load(port, duration)
                cpu[mode].append((_cpu_s(child.pid) - before) / total * 1e6)
                rps[mode].append(rate)
    finally:
        for child, _ in children.values():
            child.terminate()
        for child, _ in children.values():
            child.wait(timeout=30)
    return {
        mode: {"rps": statistics.median(rps[mode]), "cpu_us": statistics.median(cpu[mode])}
        for mode in MODES
    }


def main() -> None:
    """Run the three services, load them in turn, print a table and one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: install it with `apt-get install -y wrk`")
    result = measure(args.rounds, args.duration)
    off = result["off"]
    print(f"{'mode':8} {'req/s':>9} {'cpu us/req':>11} {'req/s vs off':>13} {'cpu vs off':>11}")
    for mode, row in result.items():
        print(
            f"{mode:8} {row['rps']:9.0f} {row['cpu_us']:11.1f} "
            f"{row['rps'] / off['rps'] - 1:+13.1%} {row['cpu_us'] / off['cpu_us'] - 1:+11.1%}"
        )
    print(json.dumps({"rounds": args.rounds, "duration_s": args.duration, "result": result}))


if __name__ == "__main__":
    main()

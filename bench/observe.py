"""What metrics and spans cost on keel's hot paths: store put/get, locks, an HTTP request.

    python bench/observe.py [--rounds 7] [--ops 3000]

Three set-ups, interleaved round by round so machine noise hits them alike:

- ``off``: stores connected with ``store_metrics().enabled = False`` (no
  store series; the lock's capability series stay, they have no switch);
- ``metrics``: the default (store series on, no tracing SDK);
- ``traced``: metrics, plus the OpenTelemetry SDK with an exporter that drops
  every span, and each loop run inside a recording span, so every store call,
  lock acquisition and hold makes a span (the worst case: real deployments
  sample requests).

The ``mw`` row is one request through the Service middleware
(``KeelMiddleware``) to a hello-world ASGI app, called directly (no socket,
so the middleware's own cost is not hidden by the network): ``off`` turns
the middleware's observation off (``observe_http = False``), ``traced``
gives it an SDK tracer provider. Its percentages are of a request that costs
about a microsecond; the same request served over a socket, where the
overhead is measured against what a request really costs, is
``bench/observe_service.py``.

Prints the best (lowest) microseconds per operation over the rounds, and
the overhead against ``off``: other load only ever adds time, so the best
round is the steadiest figure. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import use_span
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

import keel
from keel.coord import Lock, Session
from keel.observe import HttpMetrics, store_metrics
from keel.observe.spans import start_span, use_tracer_provider
from keel.service import KeelMiddleware, Probe
from keel.store import Store

MODES = ("off", "metrics", "traced")


class _Drop(SpanExporter):
    """An exporter that drops spans (the SDK's own cost, without any I/O)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _store(url: str, metrics: bool) -> Store:
    store_metrics().enabled = metrics
    try:
        return await keel.connect(url)
    finally:
        store_metrics().enabled = True


async def _timed(n: int, op: Callable[[int], Awaitable[object]], traced: bool) -> float:
    """Microseconds per call of ``op`` over ``n`` calls."""
    span = start_span("bench", {}) if traced else None
    started = time.perf_counter()
    if span is None:
        for i in range(n):
            await op(i)
    else:
        with use_span(span, end_on_exit=True):
            for i in range(n):
                await op(i)
    return (time.perf_counter() - started) / n * 1e6


Op = Callable[[int], Awaitable[object]]


def _cases(
    store: Store, session: Session, mode: str, n_ops: int, n_lock: int
) -> dict[str, tuple[Op, int]]:
    """The operations measured, each with its call count."""

    async def put(i: int) -> object:
        return await store.put(f"bench/{mode}/{i % 100}", b"value")

    async def get(i: int) -> object:
        return await store.get(f"bench/{mode}/{i % 100}")

    async def lock(i: int) -> object:
        held = await Lock(session, f"bench-{mode}").acquire()
        await held.release()
        return None

    return {"put": (put, n_ops), "get": (get, n_ops), "lock": (lock, n_lock)}


async def bench(
    url: str, ops: int, rounds: int, provider: TracerProvider
) -> dict[str, dict[str, float]]:
    """Median us per op for each (case, mode) on the store at ``url``."""
    stores = {mode: await _store(url, mode != "off") for mode in MODES}
    # a memory store never suspends: the sessions must outlive loops that starve their keepalive
    sessions = {mode: await Session(stores[mode], ttl_s=3600).__aenter__() for mode in MODES}
    samples: dict[tuple[str, str], list[float]] = {}
    n_lock = max(50, ops // 20) if stores["off"].backend == "memory" else max(20, ops // 100)
    n_ops = ops if stores["off"].backend == "memory" else max(200, ops // 10)
    for mode in MODES:
        for i in range(100):
            await stores[mode].put(f"bench/{mode}/{i}", b"v")
    for r in range(rounds):
        for mode in MODES[r % 3 :] + MODES[: r % 3]:  # rotate the order: no mode always first
            traced = mode == "traced"
            use_tracer_provider(provider if traced else None)
            for case, (op, n) in _cases(stores[mode], sessions[mode], mode, n_ops, n_lock).items():
                samples.setdefault((case, mode), []).append(await _timed(n, op, traced))
                await asyncio.sleep(0)
    use_tracer_provider(None)
    for mode in MODES:
        await sessions[mode].__aexit__(None, None, None)
        await stores[mode].close()
    out: dict[str, dict[str, float]] = {}
    for (case, mode), values in samples.items():
        out.setdefault(case, {})[mode] = min(values)
    return out


async def bench_http(ops: int, rounds: int, provider: TracerProvider) -> dict[str, float]:
    """Median us per request through the middleware, per mode."""

    async def hello(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    apps = {}
    for mode in MODES:
        app = KeelMiddleware(
            hello,
            service="bench",
            probe=Probe(),
            metrics=HttpMetrics(CollectorRegistry()),
            registry=CollectorRegistry(),
            tracer_provider=provider if mode == "traced" else None,
        )
        app.observe_http = mode != "off"
        apps[mode] = app
    scope = {"type": "http", "method": "GET", "path": "/hello", "headers": [], "query_string": b""}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(rounds):
        for mode in MODES[r % 3 :] + MODES[: r % 3]:
            app = apps[mode]
            started = time.perf_counter()
            for _ in range(ops):
                await app(dict(scope), receive, send)
            samples[mode].append((time.perf_counter() - started) / ops * 1e6)
    return {mode: min(values) for mode, values in samples.items()}


def main() -> None:
    """Run the benchmark on memory and sqlite and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=3000)
    args = parser.parse_args()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_Drop()))
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"memory": "memory://", "sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        print(f"{'backend':8} {'case':5} {'off us':>9} {'metrics us':>11} {'traced us':>10} "
              f"{'metrics':>8} {'traced':>8}")  # fmt: skip
        for backend, url in urls.items():
            result = asyncio.run(bench(url, args.ops, args.rounds, provider))
            if backend == "memory":
                result["mw"] = asyncio.run(bench_http(args.ops, args.rounds, provider))
            for case, by_mode in result.items():
                off = by_mode["off"]
                print(
                    f"{backend:8} {case:5} {off:9.2f} {by_mode['metrics']:11.2f} "
                    f"{by_mode['traced']:10.2f} {by_mode['metrics'] / off - 1:+8.1%} "
                    f"{by_mode['traced'] / off - 1:+8.1%}"
                )


if __name__ == "__main__":
    main()

"""Saga overhead: a 3-step saga of no-op steps against the same three calls made directly.

    python bench/saga.py                       # sqlite and etcd
    python bench/saga.py --sagas 2000 --inflight 32 --backend sqlite

For each backend: one coordinator runs ``sagas`` sagas with ``inflight``
started at a time; latency is start() to wait() returning. Store transactions
are counted by wrapping the store's ``txn`` (every write of keel.saga is a
txn); target: <= 2 per step on the happy path. Prints a table and one JSON
document. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

import keel
from keel.saga import Coordinator, Outcome, Saga, SagaContext, Step
from keel.store import Store
from keel.testing import EtcdCluster

STEPS = 3
TARGET_TXNS_PER_STEP = 2.0


async def noop(ctx: SagaContext) -> None:
    return None


def count_txns(store: Store) -> list[int]:
    """Wrap ``store.txn`` (on this instance) to count calls; returns the counter cell."""
    counter = [0]
    inner = store.txn

    async def txn(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await inner(*args, **kwargs)

    store.txn = txn  # type: ignore[method-assign]
    return counter


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def direct(n: int) -> dict[str, float]:
    ctx = SagaContext("b/x", "b", "s", "action", None, {}, 1, 0)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        for _ in range(STEPS):
            await noop(ctx)
        lat.append(time.perf_counter() - t0)
    return {"p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3}


async def bench(url: str, n: int, inflight: int) -> dict[str, float]:
    saga = Saga("bench", [Step(f"s{i}", action=noop) for i in range(STEPS)])
    async with keel.connect(url) as store:
        counter = count_txns(store)
        async with Coordinator(store, [saga], concurrency=inflight) as coord:
            gate = asyncio.Semaphore(inflight)
            lat: list[float] = []

            async def one() -> None:
                async with gate:
                    t0 = time.perf_counter()
                    saga_id = await coord.start("bench")
                    outcome = await coord.wait(saga_id, timeout=60)
                    lat.append(time.perf_counter() - t0)
                    assert outcome is Outcome.COMMITTED

            await asyncio.gather(*(one() for _ in range(min(50, n))))  # warm-up
            lat.clear()
            before = counter[0]
            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            elapsed = time.perf_counter() - t0
            txns = counter[0] - before
    return {
        "sagas_per_s": n / elapsed,
        "p50_ms": pct(lat, 0.5) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "mean_ms": statistics.fmean(lat) * 1e3,
        "txns_per_step": txns / (n * STEPS),
    }


async def main(backends: list[str], n: int, inflight: int) -> None:
    results: dict[str, Any] = {"direct": await direct(n)}
    with EtcdCluster(1) as cluster, tempfile.TemporaryDirectory() as tmp:
        urls = {"etcd": cluster.url + "?root=/bench-saga/", "sqlite": f"sqlite:///{tmp}/saga.db"}
        for backend in backends:
            results[backend] = await bench(urls[backend], n, inflight)
    d = results["direct"]
    print(f"{'run':8} {'sagas/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'txn/step':>9} {'ms/step':>8}")
    print(f"{'direct':8} {'':>9} {d['p50_ms']:8.3f} {d['p99_ms']:8.3f} {'':>9} {'':>8}")
    for backend in backends:
        r = results[backend]
        per_step = (r["p50_ms"] - d["p50_ms"]) / STEPS
        r["overhead_ms_per_step"] = per_step
        r["target_met"] = r["txns_per_step"] <= TARGET_TXNS_PER_STEP
        print(
            f"{backend:8} {r['sagas_per_s']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r['txns_per_step']:9.2f} {per_step:8.2f}"
        )
        verdict = "yes" if r["target_met"] else "NO"
        print(f"  <= {TARGET_TXNS_PER_STEP:g} store txns per step: {verdict}")
    print(json.dumps({"sagas": n, "inflight": inflight, "steps": STEPS, **results}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=500)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--backend", action="append", choices=["etcd", "sqlite"])
    args = parser.parse_args()
    asyncio.run(main(args.backend or ["sqlite", "etcd"], args.sagas, args.inflight))

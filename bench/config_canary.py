"""Canary rollback benchmark: from the evaluation that fails to every client back on the
previous version.

    python bench/config_canary.py                     # sqlite and etcd, 20 canaries each
    python bench/config_canary.py --backend etcd --trials 50

100 live bindings spread over 4 processes, each reporting health (unhealthy
when its document says ``broken: true``). Each trial starts a canary of a
broken document at 50%, the elected controller (in this process, evaluating
every 0.5 s) sees the unhealthy gray clients and rolls back. Measured: from
the failing evaluation (the decision's timestamp) to the last gray binding
holding the main version again (wall clock, same host), p50/p99 (target p99
<= 2 s). Prints a table and JSON; a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from typing import Any

import keel
from keel.config import Analysis, Canary, CanaryController, ConfigCenter, GrayRule, LiveConfig, Step
from keel.coord import Session
from keel.observe import ConfigMetrics
from keel.store import Store
from keel.testing import EtcdCluster

PROCESSES = 4
BINDINGS = 100
NAME = "bench-canary.json"
PLAN = Analysis(steps=(Step(percent=50, duration_s=600), Step(percent=100)), interval_s=0.5)


async def child(url: str, bindings: int, prefix: str) -> None:
    """Hold bindings; on stop print, per binding, when it left each gray trial (wall time)."""
    async with keel.connect(url) as store, Session(store, ttl_s=10) as session:
        center = ConfigCenter(store)
        left: dict[str, dict[int, float]] = {}
        async with AsyncExitStack() as stack:
            for i in range(bindings):
                cid = f"{prefix}-{i}"
                holder: list[LiveConfig[Any]] = []
                live: LiveConfig[Any] = await stack.enter_async_context(
                    center.bind(
                        NAME,
                        client_id=cid,
                        session=session,
                        health=lambda h=holder: not (h and h[0].value.get("broken")),  # type: ignore[misc]
                        health_interval_s=1.0,
                        metrics=ConfigMetrics(),
                    )
                )
                holder.append(live)
                trips = left.setdefault(cid, {})

                def record(old: Any, new: Any, trips: dict[int, float] = trips) -> None:
                    if old.get("broken") and not new.get("broken"):
                        trips[int(old["n"])] = time.time()

                live.on_change(record)
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        print(json.dumps(left), flush=True)


async def back_on_main(store: Store) -> None:
    """Wait until no client reports the gray content."""
    async with asyncio.timeout(60):
        while True:
            kvs, _ = await store.range(f"config-clients/{NAME}/")
            if len(kvs) == BINDINGS and all(b'"gray": false' in kv.value for kv in kvs):
                return
            await asyncio.sleep(0.05)


async def ended(center: ConfigCenter) -> Canary:
    """Wait until the canary is decided."""
    async with asyncio.timeout(60):
        while True:
            canary = await center.canary(NAME)
            if canary is not None and canary.status != "running":
                return canary
            await asyncio.sleep(0.05)


async def trials(url: str, count: int) -> dict[str, Any]:
    async with keel.connect(url) as store, Session(store, ttl_s=10) as session:
        center = ConfigCenter(store)
        await center.publish(NAME, json.dumps({"n": 0}))
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--child", url, "--bindings",
                str(BINDINGS // PROCESSES), "--prefix", f"p{i}",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
            for i in range(PROCESSES)
        ]  # fmt: skip
        for proc in procs:
            assert proc.stdout is not None
            assert (await proc.stdout.readline()).strip() == b"ready"
        await back_on_main(store)
        controller = CanaryController(session, node="bench", tick_s=0.05)
        runner = asyncio.ensure_future(controller.run())
        failed_at: dict[int, float] = {}
        detect: list[float] = []
        for n in range(1, count + 1):
            gray = json.dumps({"n": n, "broken": True})
            started = await center.publish_gray(NAME, gray, GrayRule(percent=50), analysis=PLAN)
            canary = await ended(center)
            failed_at[n] = canary.decisions[-1].at
            detect.append((failed_at[n] - started.published_at) * 1000)
            await back_on_main(store)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        left: dict[str, dict[str, float]] = {}
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            out, _ = await proc.communicate()
            left.update(json.loads(out.decode().strip().splitlines()[-1]))
    lat = []
    for n, at in failed_at.items():
        times = [trips[str(n)] for trips in left.values() if str(n) in trips]
        if times:
            lat.append(max(0.0, max(times) - at) * 1000)
    lat.sort()
    detect.sort()
    return {
        "gray_to_decision_p50_ms": detect[len(detect) // 2],
        "gray_to_decision_p99_ms": detect[min(len(detect) - 1, int(len(detect) * 0.99))],
        "trials": count,
        "measured": len(lat),
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


async def run(backends: list[str], count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with EtcdCluster(1) as cluster, tempfile.TemporaryDirectory() as tmp:
        urls = {"etcd": cluster.url, "sqlite": f"sqlite:///{tmp}/canary.db"}
        for name in backends:
            out[name] = await trials(urls[name], count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "etcd"])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--bindings", type=int, default=25, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="p", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.bindings, args.prefix))
        return
    results = asyncio.run(run(args.backend or ["sqlite", "etcd"], args.trials))
    print("failed evaluation -> every gray binding back on the previous version")
    print(f"{'backend':<7} {'canaries':>8} {'p50 ms':>8} {'p99 ms':>8} {'target':>7}")
    for name in ("sqlite", "etcd"):
        if name in results:
            r = results[name]
            print(f"{name:<7} {r['measured']:>8} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {2000:>7}")
    print("(for context: gray published -> failing evaluation, bounded by interval_s = 0.5 s)")
    for name in ("sqlite", "etcd"):
        if name in results:
            r = results[name]
            p50, p99 = r["gray_to_decision_p50_ms"], r["gray_to_decision_p99_ms"]
            print(f"{name:<7} p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(json.dumps({"bench": "config_canary", "results": results}))


if __name__ == "__main__":
    main()

"""Registry benchmarks: change propagation and scale, on sqlite and etcd.

    python bench/registry.py                      # both backends, full scale
    python bench/registry.py --backend etcd --instances 2000

- propagation: from ``register()`` returning in one process to a
  ``Discovery`` cache in another process holding the instance
  (CLOCK_MONOTONIC is system-wide, so the two readings compare);
  targets p99 <= 50 ms on sqlite, <= 25 ms on etcd;
- scale: N instances of 100 services registered by 10 processes: registration
  rate, keepalives per process per ttl/3 window (should not grow with the
  instance count: one lease per process), and memory per cached instance in a
  discovery process caching every service.

Pick cost per balancer is in ``bench/balance.py``. Prints a table and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import keel
from keel.registry import Discovery, Instance, Registry
from keel.testing import EtcdCluster

PROCESSES = 10
SERVICES = 100
TTL = 6


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def watcher_child(url: str, count: int) -> None:
    """Print the monotonic time at which each new instance id reaches the cache."""
    seen: dict[str, float] = {}
    async with keel.connect(url) as store, Discovery(store) as discovery:
        await discovery.instances("prop")
        print("ready", flush=True)
        async for snapshot in discovery.subscribe("prop"):
            now = time.monotonic()
            for instance in snapshot:
                seen.setdefault(instance.id, now)
            if len(seen) >= count:
                break
    print(json.dumps(seen), flush=True)


async def propagation(url: str, count: int) -> dict[str, float]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        "watch",
        "--url",
        url,
        "--count",
        str(count),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert (await child.stdout.readline()).strip() == b"ready"
    returned: dict[str, float] = {}
    async with keel.connect(url) as store, Registry(store, ttl_s=TTL) as registry:
        for i in range(count):
            reg = await registry.register(
                Instance(service="prop", address="10.9.0.1", port=1000 + i)
            )
            returned[reg.instance.id] = time.monotonic()
            await asyncio.sleep(0.01)
        async with asyncio.timeout(60):
            out, _ = await child.communicate()
    seen: dict[str, float] = json.loads(out)
    # A watcher may see the instance before register() has returned to the
    # registering process (the watch event outruns the put's response): that is 0.
    lat = [max(0.0, seen[k] - returned[k]) * 1000 for k in returned]
    return {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": max(lat)}


async def registrar_child(url: str, index: int, per_process: int, hold_s: float) -> None:
    """Register ``per_process`` instances over 100 services, hold them, report keepalives."""
    async with keel.connect(url) as store, Registry(store, ttl_s=TTL) as registry:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        began = time.perf_counter()
        for i in range(per_process):
            n = index * per_process + i
            await registry.register(
                Instance(
                    service=f"svc-{n % SERVICES}",
                    address=f"10.{index}.{i // 250}.{i % 250}",
                    port=8000 + n % 1000,
                )
            )
        elapsed = time.perf_counter() - began
        print("registered", flush=True)
        before = registry.session.statistics().keepalives
        await asyncio.sleep(hold_s)
        after = registry.session.statistics().keepalives
        windows = hold_s / (TTL / 3)
        print(
            json.dumps(
                {"rate": per_process / elapsed, "keepalives_per_window": (after - before) / windows}
            ),
            flush=True,
        )
        await asyncio.to_thread(sys.stdin.readline)


async def scale(url: str, instances: int) -> dict[str, Any]:
    per = instances // PROCESSES
    hold = TTL * 2.0
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            "register",
            "--url",
            url,
            "--index",
            str(i),
            "--count",
            str(per),
            "--hold",
            str(hold),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(PROCESSES)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdin is not None
        assert (await proc.stdout.readline()).strip() == b"ready"
    began = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
    for proc in procs:
        assert proc.stdout is not None
        async with asyncio.timeout(600):
            assert (await proc.stdout.readline()).strip() == b"registered"
    total_s = time.perf_counter() - began
    reports = []
    for proc in procs:
        assert proc.stdout is not None
        reports.append(json.loads(await proc.stdout.readline()))
    async with keel.connect(url) as store, Discovery(store) as discovery:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        cached = 0
        for s in range(SERVICES):
            cached += len(await discovery.instances(f"svc-{s}"))
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"done\n")
    for proc in procs:
        await proc.wait()
    return {
        "instances": per * PROCESSES,
        "cached": cached,
        "aggregate_registrations_per_s": per * PROCESSES / total_s,
        "per_process_registrations_per_s": sum(r["rate"] for r in reports) / len(reports),
        "keepalives_per_process_per_ttl3": sum(r["keepalives_per_window"] for r in reports)
        / len(reports),
        "bytes_per_cached_instance": used / max(1, cached),
    }


async def run(backends: list[str], count: int, instances: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with EtcdCluster(1) as cluster, tempfile.TemporaryDirectory() as tmp:
        urls = {"etcd": cluster.url, "sqlite": f"sqlite:///{tmp}/registry.db"}
        for name in backends:
            out[name] = {
                "propagation": await propagation(urls[name], count),
                "scale": await scale(urls[name], instances),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "etcd"])
    parser.add_argument("--count", type=int, default=200, help="instances for propagation")
    parser.add_argument("--instances", type=int, default=10_000, help="instances for scale")
    parser.add_argument("--child", choices=["watch", "register"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--hold", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "watch":
        asyncio.run(watcher_child(args.url, args.count))
        return
    if args.child == "register":
        asyncio.run(registrar_child(args.url, args.index, args.count, args.hold))
        return
    results = asyncio.run(run(args.backend or ["sqlite", "etcd"], args.count, args.instances))
    print(
        f"{'backend':<7} {'prop p50':>9} {'p99':>7} {'target':>7} {'reg/s':>8} {'ka/proc/win':>12} "
        f"{'B/inst':>7}"
    )
    targets = {"sqlite": 50, "etcd": 25}
    for name, res in results.items():
        p, s = res["propagation"], res["scale"]
        print(
            f"{name:<7} {p['p50_ms']:>9.2f} {p['p99_ms']:>7.2f} {targets[name]:>7} "
            f"{s['aggregate_registrations_per_s']:>8,.0f} "
            f"{s['keepalives_per_process_per_ttl3']:>12.2f} {s['bytes_per_cached_instance']:>7,.0f}"
        )
    print(json.dumps({"bench": "registry", "results": results}))


if __name__ == "__main__":
    main()

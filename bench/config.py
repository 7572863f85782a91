"""Config benchmarks: publish-to-all-bindings latency and the cost of reading ``live.value``.

    python bench/config.py                     # sqlite and etcd
    python bench/config.py --backend etcd --publishes 50

- 100 live bindings spread over 4 processes: from ``publish()`` returning to
  every binding holding the new value (the last one to get it), p50/p99
  (target p99 <= 100 ms). CLOCK_MONOTONIC is system-wide, so readings from
  different processes compare.
- ``live.value`` read cost, beside a plain attribute read (target <= 0.2 us).

Prints a table and JSON; a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import timeit
import types
from typing import Any

import keel
from keel.config import ConfigCenter
from keel.observe import ConfigMetrics
from keel.testing import EtcdCluster

PROCESSES = 4
BINDINGS = 100
NAME = "bench.json"


async def child(url: str, bindings: int) -> None:
    """Hold ``bindings`` bindings; print (version, monotonic time) as each gets a version."""
    async with keel.connect(url) as store:
        center = ConfigCenter(store)
        lives = [await center.bind(NAME, metrics=ConfigMetrics()) for _ in range(bindings)]
        seen: dict[int, list[float]] = {}

        def record(_: Any, new: Any) -> None:
            seen.setdefault(int(new["n"]), []).append(time.monotonic())

        for live in lives:
            live.on_change(record)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for live in lives:
            await live.close()
        print(
            json.dumps({n: max(times) for n, times in seen.items() if len(times) == bindings}),
            flush=True,
        )


async def fanout(url: str, publishes: int) -> dict[str, float]:
    async with keel.connect(url) as store:
        center = ConfigCenter(store)
        await center.publish(NAME, json.dumps({"n": 0}))
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--child",
                url,
                "--bindings",
                str(BINDINGS // PROCESSES),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(PROCESSES)
        ]
        for proc in procs:
            assert proc.stdout is not None
            assert (await proc.stdout.readline()).strip() == b"ready"
        sent: dict[int, float] = {}
        for n in range(1, publishes + 1):
            await center.publish(NAME, json.dumps({"n": n}))
            sent[n] = time.monotonic()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        last: dict[int, float] = {}
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            out, _ = await proc.communicate()
            for n, at in json.loads(out).items():
                last[int(n)] = max(last.get(int(n), 0.0), at)
    lat = sorted(max(0.0, last[n] - sent[n]) * 1000 for n in sent if n in last)
    return {
        "publishes": publishes,
        "complete": len(lat),
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


async def read_cost() -> dict[str, float]:
    async with keel.connect("memory://") as store:
        center = ConfigCenter(store)
        await center.publish(NAME, json.dumps({"n": 1}))
        async with center.bind(NAME, metrics=ConfigMetrics()) as live:
            plain = types.SimpleNamespace(value={"n": 1})
            n = 1_000_000
            ours = min(timeit.repeat(lambda: live.value, number=n, repeat=5)) / n * 1e6
            base = min(timeit.repeat(lambda: plain.value, number=n, repeat=5)) / n * 1e6
    return {"live_value_us": ours, "plain_attribute_us": base, "ratio": ours / base}


async def run(backends: list[str], publishes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"read": await read_cost()}
    with EtcdCluster(1) as cluster, tempfile.TemporaryDirectory() as tmp:
        urls = {"etcd": cluster.url, "sqlite": f"sqlite:///{tmp}/config.db"}
        for name in backends:
            out[name] = await fanout(urls[name], publishes)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "etcd"])
    parser.add_argument("--publishes", type=int, default=100)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--bindings", type=int, default=25, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.bindings))
        return
    results = asyncio.run(run(args.backend or ["sqlite", "etcd"], args.publishes))
    read = results["read"]
    print(
        f"live.value read: {read['live_value_us']:.3f} us (plain attribute "
        f"{read['plain_attribute_us']:.3f} us; target <= 0.2 us)"
    )
    print(f"{'backend':<7} {'publishes':>9} {'p50 ms':>8} {'p99 ms':>8} {'target':>7}")
    for name in ("sqlite", "etcd"):
        if name in results:
            r = results[name]
            print(f"{name:<7} {r['complete']:>9} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {100:>7}")
    print(json.dumps({"bench": "config", "results": results}))


if __name__ == "__main__":
    main()

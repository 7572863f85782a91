"""Lock benchmarks: keel's store Lock beside the raw etcd recipe, in one run.

    python bench/locks.py                    # etcd and sqlite
    python bench/locks.py --backend etcd

- uncontended acquire+release pairs/s of ``keel.coord.Lock`` and, on etcd, of
  the raw aetcd two-call recipe (put-if-absent txn on a lease + delete) on the
  same etcd (target: keel >= 0.8x);
- 8 contending OS processes: total pairs/s and acquire latency p50/p99.

Prints a table and one JSON document. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from typing import Any

import keel
from keel.coord import Lock, Session
from keel.testing import EtcdCluster

CONTENDERS = 8


async def keel_pairs(url: str, n: int) -> float:
    async with keel.connect(url) as store, Session(store, ttl_s=10) as session:
        lock = Lock(session, "bench/uncontended")
        for _ in range(20):
            await (await lock.acquire()).release()
        start = time.perf_counter()
        for _ in range(n):
            held = await lock.acquire()
            await held.release()
        return n / (time.perf_counter() - start)


async def raw_aetcd_pairs(endpoint: str, n: int) -> float:
    import aetcd

    host, port = endpoint.split(":")
    async with aetcd.Client(host=host, port=int(port)) as client:
        lease = await client.lease(10)
        key = f"/raw-lock/{lease.id:x}".encode()
        t = client.transactions
        start = time.perf_counter()
        for _ in range(n):
            ok, _ = await client.transaction(
                compare=[t.create(key) == 0],
                success=[t.put(key, b"", lease=lease)],
                failure=[t.get(key)],
            )
            assert ok
            await client.delete(key)
        rate = n / (time.perf_counter() - start)
        await client.revoke_lease(lease.id)
        return rate


async def contender(url: str, seconds: float) -> None:
    """Child mode: loop acquire/release for ``seconds``; print acquire latencies (ms)."""
    latencies: list[float] = []
    async with keel.connect(url) as store, Session(store, ttl_s=10) as session:
        lock = Lock(session, "bench/contended")
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.perf_counter()
            held = await lock.acquire()
            latencies.append((time.perf_counter() - began) * 1000)
            await held.release()
    print(json.dumps(latencies), flush=True)


async def contended(url: str, seconds: float) -> dict[str, float]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            url,
            "--seconds",
            str(seconds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(CONTENDERS)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
    results = [await proc.communicate() for proc in procs]
    latencies = [x for out, _ in results for x in json.loads(out)]
    ordered = sorted(latencies)
    return {
        "pairs_per_s": len(latencies) / seconds,
        "acquire_p50_ms": ordered[len(ordered) // 2],
        "acquire_p99_ms": ordered[int(len(ordered) * 0.99)],
    }


async def run(backends: list[str], n: int, repeats: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with EtcdCluster(1) as cluster, tempfile.TemporaryDirectory() as tmp:
        urls = {"etcd": cluster.url, "sqlite": f"sqlite:///{tmp}/locks.db"}
        for name in backends:
            ours: list[float] = []
            raws: list[float] = []
            for _ in range(repeats):  # interleaved: the machine's speed drifts between rounds
                ours.append(await keel_pairs(urls[name], n))
                if name == "etcd":
                    raws.append(await raw_aetcd_pairs(cluster.endpoints[0], n))
            res: dict[str, Any] = {"uncontended_pairs_per_s": statistics.median(ours)}
            if raws:
                res["raw_aetcd_pairs_per_s"] = statistics.median(raws)
                res["ratio_vs_raw_aetcd"] = statistics.median(
                    [a / b for a, b in zip(ours, raws, strict=True)]
                )
            res["contended_8_processes"] = await contended(urls[name], seconds)
            out[name] = res
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["etcd", "sqlite"])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(contender(args.child, args.seconds))
        return
    results = asyncio.run(
        run(args.backend or ["etcd", "sqlite"], args.n, args.repeats, args.seconds)
    )
    print(
        f"{'backend':<8} {'uncontended/s':>14} {'raw aetcd/s':>12} {'ratio':>7} "
        f"{'8 procs/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for name, res in results.items():
        c = res["contended_8_processes"]
        raw = res.get("raw_aetcd_pairs_per_s")
        ratio = res.get("ratio_vs_raw_aetcd")
        print(
            f"{name:<8} {res['uncontended_pairs_per_s']:>14,.0f} "
            f"{'' if raw is None else f'{raw:,.0f}':>12} "
            f"{'' if ratio is None else f'{ratio:.2f}x':>7} {c['pairs_per_s']:>10,.0f} "
            f"{c['acquire_p50_ms']:>8.2f} {c['acquire_p99_ms']:>8.2f}"
        )
    print(json.dumps({"bench": "locks", "n": args.n, "results": results}))


if __name__ == "__main__":
    main()

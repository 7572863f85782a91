"""Store benchmarks: keel's backends beside the peer each one names, in one run.

    python bench/store.py                      # all backends
    python bench/store.py --backend sqlite     # one (repeatable flag)
    python bench/store.py --sqlite-ratio       # only keel sqlite put vs raw sqlite3

Measures sequential and 64-concurrent put and get, range of 1,000 keys, a
compare-and-swap txn loop, and watch delivery latency (same process and across
processes). Peers, run in the same process run:

- etcd: the raw aetcd client doing the same calls against the same etcd
  (target: keel >= 0.85x);
- sqlite: a raw sqlite3 loop doing the same three-statement write
  transaction at the same synchronous level (target: keel put >= 0.5x);
  cross-process watch p99 <= 20 ms;
- memory: the etcd backend's sequential put (target: memory >= 20x).

Prints a table and one JSON document with every median and ratio. This is a
measurement, not a test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import keel
from keel.store import Compare, Put, Store
from keel.testing import EtcdCluster

CONCURRENCY = 64
RANGE_KEYS = 1000


def median_of(samples: list[float]) -> float:
    return statistics.median(samples)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def rate(n: int, op: Callable[[int], Awaitable[Any]], concurrency: int = 1) -> float:
    """Run ``op(i)`` for i in range(n) with ``concurrency`` workers; return ops/s."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await op(i)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(concurrency):
            tasks.create_task(worker())
    return n / (time.perf_counter() - start)


async def best_of(repeats: int, make: Callable[[], Awaitable[float]]) -> float:
    return median_of([await make() for _ in range(repeats)])


# -- keel -------------------------------------------------------------------


async def keel_suite(store: Store, n: int, repeats: int) -> dict[str, float]:
    value = b"v" * 100
    for i in range(RANGE_KEYS):
        await store.put(f"range/{i:05d}", value)

    async def put(i: int) -> None:
        await store.put(f"bench/k{i % 1000}", value)

    async def get(i: int) -> None:
        await store.get(f"range/{i % RANGE_KEYS:05d}")

    async def range_all(_: int) -> None:
        await store.range("range/")

    last = {"rev": await store.put("cas", b"0")}

    async def cas(i: int) -> None:
        result = await store.txn(
            [Compare.mod_revision("cas", "==", last["rev"])], [Put("cas", str(i).encode())]
        )
        last["rev"] = result.revision

    out = {
        "put_seq": await best_of(repeats, lambda: rate(n, put)),
        "put_c64": await best_of(repeats, lambda: rate(n, put, CONCURRENCY)),
        "get_seq": await best_of(repeats, lambda: rate(n, get)),
        "get_c64": await best_of(repeats, lambda: rate(n, get, CONCURRENCY)),
        "range1000": await best_of(repeats, lambda: rate(max(20, n // 50), range_all)),
        "txn_cas_seq": await best_of(repeats, lambda: rate(n, cas)),
    }
    out.update(await watch_latency(store))
    return out


async def watch_latency(store: Store, count: int = 400) -> dict[str, float]:
    """p50/p99 from put to delivery, in milliseconds, for a watcher in this process."""
    latencies: list[float] = []
    async with store.watch("lat/", prefix=True) as events:

        async def reader() -> None:
            async for event in events:
                latencies.append((time.monotonic() - float(event.kv.value)) * 1000)
                if len(latencies) == count:
                    return

        task = asyncio.ensure_future(reader())
        for i in range(count):
            await store.put(f"lat/{i % 10}", repr(time.monotonic()).encode())
            await asyncio.sleep(0.002)
        async with asyncio.timeout(30):
            await task
    return {"watch_p50_ms": percentile(latencies, 0.5), "watch_p99_ms": percentile(latencies, 0.99)}


async def cross_process_latency(
    url: str, count: int = 300, gap_s: float = 0.005, name: str = "xproc_watch"
) -> dict[str, float]:
    """p50/p99 from put to delivery in another OS process (CLOCK_MONOTONIC is system-wide).

    One put every ``gap_s``: 5 ms keeps the file busy; a long gap shows the
    delay of a change after a quiet spell (the sqlite poller looks less often
    once the file has not changed for a while).
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--watch-child",
        url,
        "--count",
        str(count),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    ready = await child.stdout.readline()
    assert ready.strip() == b"ready", ready
    async with keel.connect(url) as store:
        for i in range(count):
            await store.put(f"xlat/{i % 10}", repr(time.monotonic()).encode())
            await asyncio.sleep(gap_s)
    async with asyncio.timeout(60):
        out, _ = await child.communicate()
    latencies: list[float] = json.loads(out)
    return {
        f"{name}_p50_ms": percentile(latencies, 0.5),
        f"{name}_p99_ms": percentile(latencies, 0.99),
    }


async def watch_child(url: str, count: int) -> None:
    latencies: list[float] = []
    async with keel.connect(url) as store, store.watch("xlat/", prefix=True) as events:
        print("ready", flush=True)
        async for event in events:
            latencies.append((time.monotonic() - float(event.kv.value)) * 1000)
            if len(latencies) == count:
                break
    print(json.dumps(latencies), flush=True)


# -- peers --------------------------------------------------------------------


async def aetcd_suite(endpoint: str, n: int, repeats: int) -> dict[str, float]:
    """The raw aetcd client doing the same calls as keel_suite."""
    import aetcd

    host, port = endpoint.split(":")
    value = b"v" * 100
    prefix = f"/raw-{os.getpid()}/"
    async with aetcd.Client(host=host, port=int(port)) as client:
        for i in range(RANGE_KEYS):
            await client.put(f"{prefix}range/{i:05d}".encode(), value)

        async def put(i: int) -> None:
            await client.put(f"{prefix}bench/k{i % 1000}".encode(), value)

        async def get(i: int) -> None:
            await client.get(f"{prefix}range/{i % RANGE_KEYS:05d}".encode())

        async def range_all(_: int) -> None:
            # aetcd wraps the raw protobuf list lazily; iterate it (its recommended
            # KeyValue wrappers, reading key and value) so both sides hand the
            # caller the records, as keel's range does.
            result = await client.get_prefix(f"{prefix}range/".encode())
            records = [(kv.key, kv.value) for kv in result]
            assert len(records) == RANGE_KEYS

        cas_key = f"{prefix}cas".encode()
        put_result = await client.put(cas_key, b"0")
        last = {"rev": put_result.header.revision}

        async def cas(i: int) -> None:
            t = client.transactions
            ok, _ = await client.transaction(
                compare=[t.mod(cas_key) == last["rev"]],
                success=[t.put(cas_key, str(i).encode())],
                failure=[],
            )
            last["rev"] += 1 if ok else 0

        return {
            "put_seq": await best_of(repeats, lambda: rate(n, put)),
            "put_c64": await best_of(repeats, lambda: rate(n, put, CONCURRENCY)),
            "get_seq": await best_of(repeats, lambda: rate(n, get)),
            "get_c64": await best_of(repeats, lambda: rate(n, get, CONCURRENCY)),
            "range1000": await best_of(repeats, lambda: rate(max(20, n // 50), range_all)),
            "txn_cas_seq": await best_of(repeats, lambda: rate(n, cas)),
        }


def raw_sqlite_put(path: Path, n: int, synchronous: str) -> float:
    """A plain sqlite3 loop: BEGIN IMMEDIATE; bump revision; upsert key; append event; COMMIT."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY, revision INTEGER);
        INSERT OR IGNORE INTO meta VALUES (1, 1);
        CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB, create_rev INTEGER,
            mod_rev INTEGER, version INTEGER, lease INTEGER);
        CREATE TABLE IF NOT EXISTS events (revision INTEGER, key TEXT, type INTEGER, value BLOB);
        """
    )
    value = b"v" * 100
    start = time.perf_counter()
    for i in range(n):
        key = f"/keel/bench/k{i % 1000}"
        conn.execute("BEGIN IMMEDIATE")
        (rev,) = conn.execute(
            "UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision"
        ).fetchone()
        conn.execute(
            "INSERT INTO kv VALUES (?, ?, ?, ?, 1, 0) ON CONFLICT(key) DO UPDATE SET "
            "value = excluded.value, mod_rev = excluded.mod_rev, version = version + 1",
            (key, value, rev, rev),
        )
        conn.execute("INSERT INTO events VALUES (?, ?, 0, ?)", (rev, key, value))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


# -- driver -------------------------------------------------------------------


async def run_backend(
    name: str, url: str, n: int, repeats: int, etcd_endpoint: str | None
) -> dict[str, Any]:
    async with keel.connect(url) as store:
        result: dict[str, Any] = {"keel": await keel_suite(store, n, repeats)}
    if name in ("sqlite", "etcd"):
        result["keel"].update(await cross_process_latency(url))
        result["keel"].update(await cross_process_latency(url, 25, 0.4, "xproc_quiet_watch"))
    if name == "etcd" and etcd_endpoint:
        peer = await aetcd_suite(etcd_endpoint, n, repeats)
        result["aetcd"] = peer
        result["ratio_vs_aetcd"] = {k: result["keel"][k] / v for k, v in peer.items()}
    if name == "sqlite":
        ratio = await sqlite_vs_raw(url, n, max(5, repeats))
        del ratio["keel_put_seq"]
        result.update(ratio)
    return result


async def sqlite_vs_raw(
    url: str, n: int, rounds: int, synchronous: str = "full", verbose: bool = False
) -> dict[str, Any]:
    """keel's sqlite put beside the raw loop, interleaved round by round.

    fsync latency on a shared machine swings several-fold within seconds, so
    each round times keel and then the raw loop back to back, and the ratio
    reported is the median of the per-round ratios.

    The comparison is fair on durability: both sides are in WAL mode at the
    same ``synchronous`` level (FULL by default: each commit is fsynced before
    it returns), each keel put is acknowledged only after its own commit, and
    both loops are sequential (one put in flight), so no batching happens on
    either side.
    """
    path = Path(url.removeprefix("sqlite:///").split("?")[0]).with_name("raw.db")
    value = b"v" * 100
    keel_rates: list[float] = []
    raw_rates: list[float] = []
    async with keel.connect(url) as store:
        assert (await store.status()).details["synchronous"] == synchronous

        async def put(i: int) -> None:
            await store.put(f"ratio/k{i % 1000}", value)

        for round_no in range(rounds):
            keel_rates.append(await rate(n, put))
            raw_rates.append(await asyncio.to_thread(raw_sqlite_put, path, n, synchronous.upper()))
            if verbose:
                print(
                    f"round {round_no}: keel {keel_rates[-1]:,.0f}/s raw {raw_rates[-1]:,.0f}/s "
                    f"ratio {keel_rates[-1] / raw_rates[-1]:.2f}x",
                    flush=True,
                )
    ratios = [k / r for k, r in zip(keel_rates, raw_rates, strict=True)]
    return {
        "keel_put_seq": median_of(keel_rates),
        "raw_sqlite3": {"put_seq": median_of(raw_rates)},
        "ratio_vs_raw_sqlite3": {"put_seq": median_of(ratios)},
    }


async def sqlite_ratio_only(n: int, rounds: int, synchronous: str) -> None:
    """Only the interleaved keel-vs-raw sqlite put rounds (no etcd, no other metrics)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db?synchronous={synchronous}"
        result = await sqlite_vs_raw(url, n, rounds, synchronous, verbose=True)
    print(
        f"median over {rounds} rounds of {n} puts (synchronous={synchronous}): "
        f"keel {result['keel_put_seq']:,.0f}/s, raw {result['raw_sqlite3']['put_seq']:,.0f}/s, "
        f"ratio {result['ratio_vs_raw_sqlite3']['put_seq']:.2f}x"
    )
    print(json.dumps({"bench": "store-sqlite-ratio", "n": n, "rounds": rounds, **result}))


def print_table(results: dict[str, dict[str, Any]]) -> None:
    metrics = ["put_seq", "put_c64", "get_seq", "get_c64", "range1000", "txn_cas_seq"]
    header = f"{'backend':<8} " + " ".join(f"{m:>12}" for m in metrics)
    print(header)
    for name, res in results.items():
        print(f"{name:<8} " + " ".join(f"{res['keel'][m]:>12,.0f}" for m in metrics))
        for peer in ("aetcd", "raw_sqlite3"):
            if peer in res:
                cells = [
                    f"{res[peer][m]:>12,.0f}" if m in res[peer] else f"{'':>12}" for m in metrics
                ]
                print(f"{' ' + peer:<8} " + " ".join(cells))
        for key in ("ratio_vs_aetcd", "ratio_vs_raw_sqlite3", "ratio_vs_etcd_put"):
            if key in res:
                cells = [
                    f"{res[key][m]:>11.2f}x" if m in res[key] else f"{'':>12}" for m in metrics
                ]
                print(f"{' ratio':<8} " + " ".join(cells) + f"   ({key})")
        lat = {k: v for k, v in res["keel"].items() if k.endswith("_ms")}
        print(f"{'':<8} watch ms: " + ", ".join(f"{k[:-3]}={v:.2f}" for k, v in lat.items()))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["memory", "sqlite", "etcd"])
    parser.add_argument("--n", type=int, default=2000, help="operations per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sqlite-ratio",
        action="store_true",
        help="run only keel's sqlite put against the raw sqlite3 loop (interleaved rounds)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds of --sqlite-ratio")
    parser.add_argument(
        "--synchronous", choices=["full", "normal"], default="full", help="for --sqlite-ratio"
    )
    parser.add_argument("--watch-child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=300, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch_child:
        await watch_child(args.watch_child, args.count)
        return
    if args.sqlite_ratio:
        await sqlite_ratio_only(args.n, args.rounds, args.synchronous)
        return
    backends = args.backend or ["memory", "sqlite", "etcd"]
    results: dict[str, dict[str, Any]] = {}
    with EtcdCluster(1) as cluster, tempfile.TemporaryDirectory() as tmp:
        endpoint = cluster.endpoints[0]
        urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/bench.db", "etcd": cluster.url}
        for name in backends:
            results[name] = await run_backend(name, urls[name], args.n, args.repeats, endpoint)
        if "memory" in results:
            etcd_put = (
                results["etcd"]["keel"]["put_seq"]
                if "etcd" in results
                else (await run_backend("etcd", urls["etcd"], args.n, 1, None))["keel"]["put_seq"]
            )
            results["memory"]["ratio_vs_etcd_put"] = {
                "put_seq": results["memory"]["keel"]["put_seq"] / etcd_put
            }
    print_table(results)
    print(json.dumps({"bench": "store", "n": args.n, "repeats": args.repeats, "results": results}))


if __name__ == "__main__":
    asyncio.run(main())

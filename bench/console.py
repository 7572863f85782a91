"""Console benchmarks: server render time of each page, and the live stream under load.

    python bench/console.py                       # sqlite, defaults of the issue
    python bench/console.py --backend etcd --renders 20 --rate 200 --seconds 20 --clients 5

- render: a store with 1,000 instances (50 services), 200 configs (3 versions
  each), 500 jobs (4 runs each), then every page of the menu (and one config,
  one job, one run) rendered ``--renders`` times in process through the
  ASGI app (no socket: the figure is the server's time); median and p90 per
  page against the 300 ms target;
- live: the console served on a loopback port, ``--clients`` SSE clients
  subscribed to every topic, ``--rate`` changes per second for ``--seconds``
  seconds (config publishes, job run writes and instance puts); per client the
  events received and the lag from a write to the first event announcing a
  revision at or past it (p50/p99/max), and the process RSS every second
  (stable = not growing with time).

Prints a table and one JSON document. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

import keel
from keel.config import ConfigCenter
from keel.console import ConsoleSettings, Role, Users, create_app, serve
from keel.console._sessions import COOKIE
from keel.registry import Instance, encode_instance
from keel.schedule import Execution, JobDef, Status, put_job
from keel.store import Put, Store
from keel.testing import EtcdCluster

TARGET_MS = 300.0
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_T0 = 1_700_000_000.0


async def populate(store: Store, *, instances: int, configs: int, jobs: int) -> None:
    """Fill the store: instances over 50 services, configs with history, jobs with runs."""
    lease = await store.grant(3600)
    services = max(1, min(50, instances))
    ops = []
    for n in range(instances):
        inst = Instance(
            service=f"svc-{n % services:02d}",
            address=f"10.0.{n // 250}.{n % 250 + 1}",
            port=8000 + n % 100,
            id=f"i-{n:05d}",
            zone=f"zone-{n % 3}",
            version=f"1.{n % 4}.0",
        )
        ops.append(Put(f"services/{inst.service}/{inst.id}", encode_instance(inst), lease=lease.id))
    await _in_batches(store, ops)
    center = ConfigCenter(store)
    for n in range(configs):
        for v in range(3):
            body = "\n".join(f"key{k}: {n * 10 + k + v}" for k in range(20)) + "\n"
            await center.publish(f"app-{n:03d}.yaml", body, author="bench")
    ops = []
    for n in range(jobs):
        job = JobDef(name=f"job-{n:03d}", trigger={"interval_s": 60 + n})
        await put_job(store, job)
        for r in range(4):
            fire = _T0 + r * 60
            rec = Execution(
                job=job.name,
                name=f"{round(fire * 1000):013d}-000",
                handler=job.name,
                fire=fire,
                status=Status.SUCCEEDED if r % 4 else Status.FAILED,
                attempt=1,
                worker="w-1",
                token=100 + r,
                started_at=fire,
                finished_at=fire + 0.1 * (r + 1),
                log="line\n" * 5,
            )
            ops.append(Put(rec.key, rec.encode()))
    await _in_batches(store, ops)


async def _in_batches(store: Store, ops: list[Put], size: int = 100) -> None:
    for i in range(0, len(ops), size):
        await store.txn([], ops[i : i + size])


async def _logged_in(store: Store, app: Any) -> tuple[str, str]:
    await Users(store, hasher=CHEAP).add("bench", "bench password 123", Role.ADMIN)
    token, session = await app.state.console.sessions.create("bench")
    return token, session.csrf


async def renders(store: Store, count: int) -> dict[str, dict[str, float]]:
    """Median/p90 server time (ms) of each page over ``count`` renders."""
    app = create_app(store, settings=ConsoleSettings(), hasher=CHEAP)
    token, _ = await _logged_in(store, app)
    paths = [p.nav.path for p in app.state.console.pages if p.nav is not None]
    paths += ["/configs/app-000.yaml", "/jobs/job-000", "/jobs/job-000/runs/1700000060000-000"]
    out: dict[str, dict[str, float]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", cookies={COOKIE: token}
    ) as http:
        for path in paths:
            times, status = [], 0
            for _ in range(count):
                started = time.perf_counter()
                response = await http.get(path)
                times.append((time.perf_counter() - started) * 1000)
                status = response.status_code
            times.sort()
            out[path] = {
                "status": status,
                "median_ms": round(statistics.median(times), 1),
                "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1),
                "bytes": len(response.content),
            }
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _client(url: str, token: str, got: dict[str, Any]) -> None:
    """One SSE client: note (time received, revision announced) of every change event."""
    headers = {"accept": "text/event-stream", "cookie": f"{COOKIE}={token}"}
    async with (
        httpx.AsyncClient(timeout=None) as http,
        http.stream("GET", f"{url}/live", headers=headers) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                revision = json.loads(line[6:]).get("revision", 0)
                got["events"].append((time.perf_counter(), revision))


def _lags(events: list[tuple[float, int]], written: dict[int, float]) -> list[float]:
    """Per write: ms from the write to the first event announcing its revision or a later one."""
    revisions = [r for _, r in events]
    out = []
    for revision, at in written.items():
        i = bisect.bisect_left(revisions, revision)
        if i < len(events):
            out.append(max(0.0, events[i][0] - at) * 1000)
    return out


async def live(store: Store, *, clients: int, rate: int, seconds: float) -> dict[str, Any]:
    """SSE clients on a served console while ``rate`` changes/s are written for ``seconds``."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    settings = ConsoleSettings(host="127.0.0.1", port=0)
    server = asyncio.create_task(serve(store, settings, stop=stop, on_ready=ready.set_result))
    url = await asyncio.wait_for(ready, 30)
    await Users(store, hasher=CHEAP).add("live", "bench password 123", Role.VIEWER)
    sessions = [await _session(store) for _ in range(clients)]
    written: dict[int, float] = {}
    got: list[dict[str, Any]] = [{"events": []} for _ in range(clients)]
    readers = [asyncio.create_task(_client(url, t, g)) for t, g in zip(sessions, got, strict=True)]
    await asyncio.sleep(1.0)
    rss = [_rss_mb()]
    center = ConfigCenter(store)
    interval = 1.0 / rate
    started = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = started + n * interval
        if due > time.perf_counter():
            await asyncio.sleep(due - time.perf_counter())
        revision = await _one_change(store, center, n)
        written[revision] = time.perf_counter()
        n += 1
        if n % rate == 0:
            rss.append(_rss_mb())
    await asyncio.sleep(2.0)  # let the last notifications arrive
    for task in readers:
        task.cancel()
    for task in readers:
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task
    stop.set()
    await server
    return _live_summary(n, elapsed, written, got, rss)


async def _session(store: Store) -> str:
    from keel.console._sessions import Sessions

    token, _ = await Sessions(store).create("live")
    return token


async def _one_change(store: Store, center: ConfigCenter, n: int) -> int:
    kind = n % 3
    if kind == 0:
        doc = await center.publish(f"live-{n % 20}.yaml", f"n: {n}\n", author="bench")
        kv = await store.get(f"config/{doc.name}")
        return kv.mod_revision if kv else 0
    if kind == 1:
        return await store.put(f"jobs/job-{n % 500:03d}/planned", json.dumps({"fire": n}).encode())
    inst = Instance(service="svc-live", address="10.9.0.1", port=9000, id=f"l-{n % 50}")
    return await store.put(f"services/svc-live/{inst.id}", encode_instance(inst))


def _live_summary(
    n: int, elapsed: float, written: dict[int, float], got: list[dict[str, Any]], rss: list[float]
) -> dict[str, Any]:
    per_client = []
    for g in got:
        lags = sorted(_lags(g["events"], written))
        per_client.append(
            {
                "events": len(g["events"]),
                "revisions_announced": len(lags),
                "lag_p50_ms": round(lags[len(lags) // 2], 1) if lags else None,
                "lag_p99_ms": round(lags[int(0.99 * (len(lags) - 1))], 1) if lags else None,
                "lag_max_ms": round(lags[-1], 1) if lags else None,
            }
        )
    half = len(rss) // 2
    return {
        "changes": n,
        "rate_per_s": round(n / elapsed, 1),
        "clients": per_client,
        "rss_mb_start": round(rss[0], 1),
        "rss_mb_mid": round(rss[half], 1),
        "rss_mb_end": round(rss[-1], 1),
        "rss_mb_second_half_growth": round(rss[-1] - rss[half], 1),
    }


async def run_one(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both measurements on one store URL."""
    async with keel.connect(url) as store:
        started = time.perf_counter()
        await populate(store, instances=args.instances, configs=args.configs, jobs=args.jobs)
        filled_s = time.perf_counter() - started
        pages = await renders(store, args.renders)
        stream = await live(store, clients=args.clients, rate=args.rate, seconds=args.seconds)
    return {"populate_s": round(filled_s, 1), "pages": pages, "live": stream}


def _print(backend: str, result: dict[str, Any]) -> None:
    print(f"\n== {backend}: populated in {result['populate_s']} s")
    print(f"{'page':32} {'status':>6} {'median ms':>10} {'p90 ms':>8} {'KiB':>7}  target")
    for path, r in result["pages"].items():
        mark = "ok" if r["median_ms"] <= TARGET_MS else "OVER"
        print(
            f"{path:32} {r['status']:>6} {r['median_ms']:>10} {r['p90_ms']:>8} "
            f"{r['bytes'] / 1024:>7.1f}  {mark}"
        )
    s = result["live"]
    print(
        f"live: {s['changes']} changes at {s['rate_per_s']}/s, RSS MB {s['rss_mb_start']} -> "
        f"{s['rss_mb_mid']} -> {s['rss_mb_end']}"
    )
    for i, c in enumerate(s["clients"]):
        print(
            f"  client {i}: {c['events']} events, {c['revisions_announced']} writes announced, "
            f"lag p50 {c['lag_p50_ms']} ms p99 {c['lag_p99_ms']} ms max {c['lag_max_ms']} ms"
        )


def main() -> None:
    """Parse the options, run each backend, print the table and the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "etcd"])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--configs", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for backend in args.backend or ["sqlite"]:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                results[backend] = asyncio.run(run_one(f"sqlite:///{tmp}/keel.db", args))
        else:
            with EtcdCluster(1) as cluster:
                results[backend] = asyncio.run(run_one(cluster.url, args))
        _print(backend, results[backend])
    print(json.dumps({"target_ms": TARGET_MS, "results": results}))


if __name__ == "__main__":
    main()

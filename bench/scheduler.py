"""Scheduler benchmarks, keel beside its peers in one run.

    python -P bench/scheduler.py                                # defaults (scaled for 2 cores)
    python bench/scheduler.py --jobs 1000 --seconds 30 --tasks 10000 --backend sqlite etcd

- wheel: add+cancel of 1,000,000 timers: ``TimingWheel`` vs ``heapq`` (push
  + tombstone) vs ``loop.call_later`` (+ ``cancel``), per operation;
- lateness: N jobs every 1 s for S seconds on 2 worker processes (start minus
  fire time from the run records), and APScheduler 3's AsyncIOScheduler with
  the same N jobs in one process in the same run (it coordinates nothing);
- throughput: delayed tasks executed per second by 2 worker processes;
- exactly-once: T delayed tasks, 3 workers, one killed (kill -9) and replaced
  every 5 s; counts runs SUCCEEDED twice, tasks never run, fenced effects.

Prints a table and one JSON line. Nothing here is a timed assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import keel
from keel.schedule import JobContext, Scheduler, Status, enqueue, list_runs
from keel.schedule.wheel import TimingWheel
from keel.store import Compare, Put
from keel.testing import EtcdCluster

ROOT = Path(__file__).resolve().parents[1]
SELF = str(Path(__file__).resolve())


def pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- timing wheel ------------------------------------------------------------


def bench_wheel(n: int, rounds: int | None = None) -> dict[str, float]:
    """ns per add+cancel for the wheel, heapq with tombstones, and call_later.

    Each part builds and frees its own structures after a ``gc.collect()``, so
    none is timed while another's million objects are alive (the collector's
    full passes would walk them too). ``*_with_drain_ns`` adds the later cost of
    the tombstones: popping the whole heap, or advancing the wheel past 60 s.
    The parts run interleaved for ``rounds`` rounds (default 5, or the
    ``KEEL_BENCH_WHEEL_ROUNDS`` environment variable), each round starting with
    the next part in turn; every figure is the median over the rounds, so a
    burst of other work on the machine moves no figure alone.
    """
    import gc
    import statistics

    if rounds is None:
        rounds = int(os.environ.get("KEEL_BENCH_WHEEL_ROUNDS", "5"))
    rng = random.Random(1)
    deadlines = [rng.uniform(0, 60) for _ in range(n)]

    def wheel_part() -> tuple[float, float]:
        wheel: TimingWheel[int] = TimingWheel(tick_s=0.01)
        t0 = time.perf_counter()
        timers = [wheel.add(d, i) for i, d in enumerate(deadlines)]
        for timer in timers:
            timer.cancel()
        t1 = time.perf_counter()
        wheel.advance(61.0)  # drops every cancelled timer
        return t1 - t0, time.perf_counter() - t1

    def heap_part() -> tuple[float, float]:
        heap: list[list[Any]] = []
        t0 = time.perf_counter()
        entries = []
        for i, d in enumerate(deadlines):
            entry = [d, i, True]
            heapq.heappush(heap, entry)
            entries.append(entry)
        for entry in entries:
            entry[2] = False  # tombstone; popped later at O(log n) each
        t1 = time.perf_counter()
        while heap:
            heapq.heappop(heap)
        return t1 - t0, time.perf_counter() - t1

    async def call_later() -> float:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        handles = [loop.call_later(d, int) for d in deadlines]
        for h in handles:
            h.cancel()
        return time.perf_counter() - start

    def later_part() -> tuple[float, float]:
        return asyncio.run(call_later()), 0.0

    parts = {"wheel": wheel_part, "heapq": heap_part, "call_later": later_part}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in parts}
    names = list(parts)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            gc.collect()
            samples[name].append(parts[name]())
    per = 1e9 / n

    def median(name: str, *, drain: bool = False) -> float:
        return statistics.median(a + (b if drain else 0.0) for a, b in samples[name]) * per

    return {
        "wheel_ns": median("wheel"),
        "wheel_with_drain_ns": median("wheel", drain=True),
        "heapq_ns": median("heapq"),
        "heapq_with_drain_ns": median("heapq", drain=True),
        "call_later_ns": median("call_later"),
        "rounds": rounds,
    }


# -- child processes -----------------------------------------------------------


async def child(url: str, spec: dict[str, Any]) -> None:
    """A scheduler process: jobs every second and/or the 'task' handler."""
    options: dict[str, Any] = {}
    if "lookahead" in spec:
        options["lookahead_s"] = float(spec["lookahead"])
    async with keel.connect(url) as store:
        scheduler = Scheduler(
            store,
            **options,
            ttl_s=int(spec.get("ttl", 3)),
            planner=bool(spec.get("planner", True)),
            steal_after_s=float(spec.get("steal", 1.0)),
            # every job's run may be in flight at once, as in APScheduler's asyncio executor
            max_concurrency=max(64, int(spec.get("jobs", 0))),
        )

        async def noop(ctx: JobContext) -> None:
            return None

        async def task(ctx: JobContext) -> None:
            key = f"effects/{ctx.execution_id}"
            await ctx.store.txn(
                [ctx.guard(), Compare.absent(key)], [Put(key, str(ctx.fencing_token).encode())]
            )

        for i in range(int(spec.get("jobs", 0))):
            scheduler.job(f"b.{i}", interval_s=1.0, keep_last=1000)(noop)
        scheduler.handler("task")(task)
        scheduler.handler("noop")(noop)
        gc.freeze()  # as `keel worker` does once loaded (APScheduler's process gets the same)
        run = asyncio.ensure_future(scheduler.run())
        await scheduler.ready.wait()
        print("READY", flush=True)
        tracer = None
        if os.environ.get("KEEL_BENCH_TRACE"):  # counters to stderr every second
            tracer = asyncio.ensure_future(_trace(scheduler))
        with contextlib.suppress(asyncio.CancelledError):
            await run
        if tracer is not None:
            tracer.cancel()


async def _trace(scheduler: Scheduler) -> None:
    pauses: list[float] = []
    began = [0.0]

    def full_collections(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                pauses.append((time.perf_counter() - began[0]) * 1000)

    gc.callbacks.append(full_collections)
    while True:
        await asyncio.sleep(1)
        parts = [f"{time.time() % 100:6.2f} full gc ms {[round(p) for p in pauses]}"]
        pauses.clear()
        if scheduler.planner is not None:
            parts.append(repr(scheduler.planner.statistics()))
        if scheduler.worker is not None:
            parts.append(repr(scheduler.worker.statistics()))
        print(" ".join(parts), file=sys.stderr, flush=True)


async def spawn(url: str, spec: dict[str, Any]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",  # keep bench/ off the children's sys.path
        SELF,
        "--child",
        json.dumps(spec),
        "--url",
        url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    await proc.stdout.readline()
    return proc


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            async with asyncio.timeout(20):
                await p.wait()
        except TimeoutError:
            p.kill()
            await p.wait()


# -- lateness ------------------------------------------------------------------


async def lateness_keel(url: str, jobs: int, seconds: float) -> dict[str, Any]:
    spec: dict[str, Any] = {"jobs": jobs}
    if os.environ.get("KEEL_BENCH_LOOKAHEAD"):
        spec["lookahead"] = float(os.environ["KEEL_BENCH_LOOKAHEAD"])
    procs = [await spawn(url, {**spec, "planner": i == 0}) for i in range(2)]
    started = time.time()
    await asyncio.sleep(seconds)
    stopped = time.time()
    await stop(procs)
    samples: list[float] = []
    by_worker: dict[str, list[float]] = {}
    by_fire: dict[float, list[float]] = {}
    unstarted: list[str] = []
    async with keel.connect(url) as store:
        for i in range(jobs):
            for r in await list_runs(store, f"b.{i}"):
                if started + 2 < r.fire < stopped - 1 and r.lateness_s is None:
                    unstarted.append(f"{r.fire - started:.1f}s {r.status.value} {r.worker}")
                if r.fire > started + 2 and r.lateness_s is not None:
                    samples.append(r.lateness_s)
                    by_worker.setdefault(r.worker, []).append(r.lateness_s)
                    by_fire.setdefault(r.fire, []).append(r.lateness_s)
    worst = sorted(by_fire, key=lambda f: pct(by_fire[f], 0.99), reverse=True)[:3]
    return {
        "runs": len(samples),
        "p50_ms": pct(samples, 0.5) * 1000,
        "p99_ms": pct(samples, 0.99) * 1000,
        # where the tail comes from: each worker's share, and the worst fire instants
        "workers_p50_p99_ms": sorted(
            (len(v), round(pct(v, 0.5) * 1000, 1), round(pct(v, 0.99) * 1000, 1))
            for v in by_worker.values()
        ),
        "worst_fires_p99_ms": [round(pct(by_fire[f], 0.99) * 1000, 1) for f in worst],
        "worst_fires_at_s": [round(f - started, 1) for f in worst],
        "due_never_started": len(unstarted),  # fires due a second before the stop
        "due_never_started_examples": sorted(set(unstarted))[:3],
        "fires_p99_ms": [round(pct(by_fire[f], 0.99) * 1000) for f in sorted(by_fire)],
    }


async def lateness_apscheduler(jobs: int, seconds: float) -> dict[str, float]:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    samples: list[float] = []

    async def job() -> None:
        now = time.time()
        samples.append(now - int(now))  # fires on whole seconds

    sched = AsyncIOScheduler()
    for i in range(jobs):
        sched.add_job(job, "cron", second="*", id=f"a{i}", misfire_grace_time=30)
    gc.freeze()  # the same start-up freeze as keel's worker processes
    sched.start()
    await asyncio.sleep(seconds)
    sched.shutdown(wait=False)
    tail = samples[jobs * 2 :]
    return {"runs": len(tail), "p50_ms": pct(tail, 0.5) * 1000, "p99_ms": pct(tail, 0.99) * 1000}


# -- throughput and exactly-once ------------------------------------------------


async def enqueue_many(
    url: str, count: int, spread_s: float, lead_s: float, handler: str = "task"
) -> float:
    due = time.time() + lead_s
    async with keel.connect(url) as store:
        for i in range(count):
            delay = max(0.0, due - time.time()) + spread_s * i / count
            await enqueue(store, handler, i, delay_s=delay)
    return due


async def results(url: str, handler: str = "task") -> tuple[list[Any], int]:
    async with keel.connect(url) as store:
        runs = await list_runs(store, handler)
        effects, _ = await store.range("effects/")
    return runs, len(effects)


async def throughput(url: str, tasks: int) -> dict[str, float]:
    due = await enqueue_many(url, tasks, 0.0, 1.0, "noop")
    procs = [await spawn(url, {"planner": False}) for _ in range(2)]
    async with asyncio.timeout(600):
        while True:
            runs, _ = await results(url, "noop")
            if sum(r.status.final for r in runs) >= tasks:
                break
            await asyncio.sleep(0.5)
    await stop(procs)
    first = min(r.started_at for r in runs if r.started_at)
    last = max(r.finished_at for r in runs if r.finished_at)
    return {"tasks": tasks, "per_s": tasks / (last - max(first, due)), "seconds": last - first}


async def exactly_once(url: str, tasks: int, spread_s: float) -> dict[str, float]:
    procs = [await spawn(url, {"planner": False, "ttl": 2}) for _ in range(3)]
    feeder = asyncio.ensure_future(enqueue_many(url, tasks, spread_s, 0.5))
    kills = 0
    while not feeder.done() or kills < 2:
        await asyncio.sleep(5)
        victim = procs.pop(0)
        victim.kill()
        await victim.wait()
        kills += 1
        procs.append(await spawn(url, {"planner": False, "ttl": 2}))
    await feeder
    async with asyncio.timeout(300):
        while True:
            runs, effects = await results(url)
            if len(runs) >= tasks and all(r.status.final for r in runs):
                break
            await asyncio.sleep(1)
    await stop(procs)
    succeeded = [r for r in runs if r.status is Status.SUCCEEDED]
    return {
        "tasks": tasks,
        "kills": kills,
        "succeeded": len(succeeded),
        "succeeded_twice": len(succeeded) - len({r.id for r in succeeded}),
        "never_run": tasks - len({r.id for r in succeeded}),
        "re_run_after_kill": sum(1 for r in succeeded if r.attempt > 1),
        "fenced_effects": effects,
    }


# -- driver ----------------------------------------------------------------------

PARTS = ("wheel", "lateness", "throughput", "once")


async def run_backend(name: str, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    cluster = EtcdCluster(1) if name == "etcd" else None

    def url(tag: str) -> str:
        if cluster is None:
            return f"sqlite:///{tmp}/{tag}.db"
        return f"{cluster.url}?root=/bench-{tag}-{os.getpid()}/"

    if cluster is not None:
        cluster.__enter__()
    try:
        out: dict[str, Any] = {}
        if "lateness" in args.parts:
            out["lateness"] = await lateness_keel(url("late"), args.jobs, args.seconds)
        if "throughput" in args.parts:
            out["throughput"] = await throughput(url("tput"), args.tasks)
        if "once" in args.parts:
            out["exactly_once"] = await exactly_once(url("once"), args.tasks, args.spread)
        return out
    finally:
        if cluster is not None:
            cluster.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", nargs="+", default=["sqlite", "etcd"])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=15.0, help="exactly-once feed time")
    parser.add_argument("--timers", type=int, default=1_000_000)
    parser.add_argument(
        "--parts",
        nargs="+",
        default=list(PARTS),
        choices=PARTS,
        help="which measurements to run (default: all)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        profile = os.environ.get("KEEL_BENCH_PROFILE")  # a path prefix: one .prof per child
        if profile:
            import cProfile

            with cProfile.Profile() as prof:
                asyncio.run(child(args.url, spec))
            prof.dump_stats(f"{profile}-{os.getpid()}.prof")
        else:
            asyncio.run(child(args.url, spec))
        return
    out: dict[str, Any] = {}
    if "wheel" in args.parts:
        out["wheel"] = bench_wheel(args.timers)
    if "lateness" in args.parts:
        out["apscheduler"] = asyncio.run(lateness_apscheduler(args.jobs, args.seconds))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backend:
            out[name] = asyncio.run(run_backend(name, args, tmp))
    if "wheel" in out:
        w = out["wheel"]
        print(f"timers: {args.timers:,} add+cancel, ns per op")
        for k in ("wheel_ns", "heapq_ns", "heapq_with_drain_ns", "call_later_ns"):
            print(f"  {k:<22} {w[k]:8.0f}")
    if "apscheduler" in out:
        print(f"lateness, {args.jobs} jobs every 1 s for {args.seconds:.0f} s (p50 / p99 ms):")
        ap = out["apscheduler"]
        print(
            f"  apscheduler 3 (1 process)  {ap['p50_ms']:7.1f} / {ap['p99_ms']:7.1f}"
            f"  runs {ap['runs']}"
        )
        for name in args.backend:
            la = out[name]["lateness"]
            p50, p99 = la["p50_ms"], la["p99_ms"]
            print(f"  keel {name:<6} (2 workers) {p50:7.1f} / {p99:7.1f}  runs {la['runs']}")
    for name in args.backend:
        if "throughput" in out[name]:
            tp = out[name]["throughput"]
            print(f"{name}: delayed tasks {tp['per_s']:.0f}/s with 2 workers ({tp['tasks']} tasks)")
        if "exactly_once" not in out[name]:
            continue
        once = out[name]["exactly_once"]
        print(
            f"{name}: exactly-once {once['tasks']} tasks, {once['kills']} kills: "
            f"succeeded twice {once['succeeded_twice']}, never run {once['never_run']}, "
            f"re-run after a kill {once['re_run_after_kill']}, "
            f"fenced effects {once['fenced_effects']}"
        )
    print(json.dumps({"bench": "scheduler", "results": out}))


if __name__ == "__main__":
    main()

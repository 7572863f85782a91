"""Service runtime and HTTP client throughput, side by side in one run.

    python bench/http_service.py                 # needs wrk (Debian: apt-get install -y wrk)
    python bench/http_service.py --duration 10 --requests 10000
    python bench/http_service.py --parts counter --runs 5

1. hello world with ``wrk -t2 -c100``: the same ASGI app on bare uvicorn
   (uvloop + httptools, one worker) and through ``keel.service.Service``
   (registration, probes, metrics, deadline and trace middleware).
   Target: Service >= 0.9x bare uvicorn.
2. client: ``requests`` GETs, 32 in flight, through ``keel.http.Client`` to 2
   Service instances by name, and through plain ``httpx.AsyncClient`` to one
   fixed URL. Target: keel >= 0.8x plain httpx.
3. the counter service (``examples/counter``: a Starlette ``/incr`` doing a
   Redis INCR, redis-py with the hiredis parser) run by ``python -m
   examples.counter`` with ``wrk -t2 -c100 -d10s``, wrk and the server on
   the same 2 cores: one redis-py call per request or concurrent INCRs
   pipelined (``examples.counter.Batcher``), with 1 and 2 worker processes;
   the median of ``--runs`` runs each. Anchor: 8,500 req/s. Correctness: the
   final Redis value equals the responses wrk counted plus those it abandoned
   in flight at its deadline (at most -c, 100), and 20 sequential requests
   afterwards move it by exactly 20.
4. scrape: what ``/metrics`` costs when the supervisor merges the series of
   every worker (``--parts scrape``): median latency of ``--scrapes``
   scrapes on fresh connections against ``/healthz`` on the same server,
   with 1 worker (a local render) and 2 workers (a merged one). No target;
   it is off the request path. Needs no wrk.

Every server runs in its own process; all on loopback. Prints a table and one
JSON document. A measurement, not a test.
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn
import uvloop

import keel
from keel.http import Client
from keel.service import Service, ServiceSettings
from keel.testing import RedisServer, free_port

HELLO = b"Hello, World!"
ROOT = Path(__file__).resolve().parents[1]
COUNTERS = {  # label: (workers, app)
    "1 worker, one INCR per request": (1, "examples.counter:plain_app"),
    "1 worker, pipelined": (1, "examples.counter:app"),
    "2 workers, one INCR per request": (2, "examples.counter:plain_app"),
    "2 workers, pipelined": (2, "examples.counter:app"),
}


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app: 200 and a fixed body."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": HELLO})


def serve(kind: str, port: int, store: str, redis_url: str) -> None:
    """Child mode: run one server until SIGTERM."""
    if kind == "uvicorn":
        uvicorn.run(
            hello, port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
        )
        return
    settings = ServiceSettings(port=port, drain_delay_s=0.0, grace_s=1.0)
    uvloop.run(Service(kind, hello, store=store, settings=settings).serve())


@contextlib.contextmanager
def server(kind: str, store: str, redis_url: str = "") -> Any:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(port), store, redis_url],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    with _running(proc, kind, port, "/") as url:
        yield url


@contextlib.contextmanager
def counter_server(workers: int, app: str, store: str, redis_url: str) -> Any:
    """``python -m examples.counter`` in its own process, as a user would start it."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "examples.counter", "--workers", str(workers)),
            *("--port", str(port), "--store", store, "--app", app),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "COUNTER_REDIS_URL": redis_url},
    )
    with _running(proc, "counter", port, "/readyz") as url:
        yield url


@contextlib.contextmanager
def _running(proc: subprocess.Popen[bytes], kind: str, port: int, path: str) -> Any:
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.1)
        if kind != "uvicorn":
            time.sleep(0.3)  # registered after readiness
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wrk(url: str, duration: int) -> dict[str, float]:
    """One ``wrk -t2 -c100`` run: requests/s, p99, non-2xx and socket errors, responses."""
    out = subprocess.run(
        ["wrk", "-t2", "-c100", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: (.*)", out)
    done = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps,
        "p99_ms": p99_ms,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sockets.group(1) if sockets else "",
        "responses": int(done.group(1)) if done else 0,
    }


async def drive(client: httpx.AsyncClient, url: str, requests: int, in_flight: int) -> float:
    left = [requests]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            answer = await client.get(url)
            assert answer.status_code == 200

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(in_flight):
            tasks.create_task(worker())
    return requests / (time.perf_counter() - start)


async def client_bench(store_url: str, requests: int) -> dict[str, float]:
    results: dict[str, float] = {"keel": 0.0, "httpx": 0.0}
    with server("service", store_url) as first, server("service", store_url):
        async with (
            keel.connect(store_url) as store,
            Client(store) as keel_client,
            httpx.AsyncClient() as plain,
        ):
            await drive(keel_client, "http://service/", 500, 32)  # warm-up
            await drive(plain, first + "/", 500, 32)
            for _ in range(2):
                rate = await drive(keel_client, "http://service/", requests, 32)
                results["keel"] = max(results["keel"], rate)
                rate = await drive(plain, first + "/", requests, 32)
                results["httpx"] = max(results["httpx"], rate)
    return results


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of requests/s and p99 over runs, with the runs themselves."""
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "runs": runs,
    }


def hello_bench(store: str, args: argparse.Namespace) -> dict[str, Any]:
    """Bare uvicorn and Service, interleaved, ``--runs`` each."""
    runs: dict[str, list[dict[str, Any]]] = {"uvicorn": [], "service": []}
    for _ in range(args.runs):
        for kind, kind_runs in runs.items():
            with server(kind, store) as url:
                wrk(url + "/", 1)  # warm-up
                kind_runs.append(wrk(url + "/", args.duration))
    out: dict[str, Any] = {kind: median_run(kind_runs) for kind, kind_runs in runs.items()}
    out["ratio"] = out["service"]["rps"] / out["uvicorn"]["rps"]
    out["p99_ratio"] = out["service"]["p99_ms"] / out["uvicorn"]["p99_ms"]
    return out


def counter_bench(store: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Each counter variant ``--runs`` times (a fresh process and counter per run)."""
    client = redis.Redis.from_url(redis_url)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in COUNTERS}
    try:
        for _ in range(args.runs):
            for label, (workers, app) in COUNTERS.items():
                with counter_server(workers, app, store, redis_url) as url:
                    wrk(url + "/incr", 1)  # warm-up
                    time.sleep(0.5)  # its abandoned requests finish before the reset
                    client.set("counter", 0)
                    run = wrk(url + "/incr", args.counter_duration)
                    time.sleep(0.5)  # the requests wrk abandoned at its deadline finish
                    run["counter"] = int(client.get("counter") or 0)
                    run["sequential_ok"] = sequential_check(url, client)
                runs[label].append(run)
                check = "ok" if counter_ok(run) else "WRONG"
                print(
                    f"  {label:<34}{run['rps']:>9.0f} req/s  p99 {run['p99_ms']:6.1f} ms  "
                    f"responses {run['responses']}  counter {run['counter']}  {check}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        client.close()
    return {label: median_run(label_runs) for label, label_runs in runs.items()}


def scrape_bench(store: str, redis_url: str, scrapes: int) -> dict[str, Any]:
    """Median ms of /metrics and /healthz (interleaved, fresh connections) per worker count."""
    out: dict[str, Any] = {}
    limits = httpx.Limits(max_keepalive_connections=0)
    for workers in (1, 2):
        with counter_server(workers, "examples.counter:plain_app", store, redis_url) as url:
            times: dict[str, list[float]] = {"/metrics": [], "/healthz": []}
            with httpx.Client(base_url=url, limits=limits) as http:
                for _ in range(100):  # some traffic, so the series are not empty
                    http.get("/incr")
                for _ in range(scrapes):
                    for path, samples in times.items():
                        start = time.perf_counter()
                        answer = http.get(path)
                        samples.append((time.perf_counter() - start) * 1000)
                        answer.raise_for_status()
                size = len(http.get("/metrics").content)
        out[f"{workers} worker{'s' if workers > 1 else ''}"] = {
            "metrics_ms": statistics.median(times["/metrics"]),
            "healthz_ms": statistics.median(times["/healthz"]),
            "exposition_bytes": size,
        }
    return out


def sequential_check(url: str, client: redis.Redis) -> bool:
    """20 requests one at a time: each answers the previous value + 1, Redis moves by 20."""
    before = int(client.get("counter") or 0)
    with httpx.Client(base_url=url) as http:
        answers = [int(http.get("/incr").text) for _ in range(20)]
    after = int(client.get("counter") or 0)
    return answers == list(range(before + 1, before + 21)) and after == before + 20


def counter_ok(run: dict[str, Any]) -> bool:
    """No error, and every increment is a response wrk counted or one it abandoned in flight."""
    counted = run["responses"]
    in_flight_max = 100  # wrk -c100: at most one abandoned request per connection
    return (
        run["non_2xx"] == 0
        and not run["socket_errors"]
        and counted <= run["counter"] <= counted + in_flight_max
        and run["sequential_ok"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="wrk seconds for hello world")
    parser.add_argument("--counter-duration", type=int, default=10)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per variant (medians)")
    parser.add_argument("--scrapes", type=int, default=41, help="scrapes per server (scrape)")
    parser.add_argument(
        "--parts",
        type=lambda text: set(text.split(",")),
        default={"hello", "client", "counter"},
        help="comma-separated: hello, client, counter, scrape",
    )
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, port, store, redis_url = args.serve
        serve(kind, int(port), store, redis_url)
        return
    if args.parts & {"hello", "counter"} and shutil.which("wrk") is None:
        sys.exit("bench/http_service.py needs wrk: apt-get install -y wrk")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis_server:
        store = f"sqlite:///{tmp}/keel.db"
        if "hello" in args.parts:
            out["hello"] = hello_bench(store, args)
        if "client" in args.parts:
            rates = uvloop.run(client_bench(store, args.requests))
            out["client"] = {**rates, "ratio": rates["keel"] / rates["httpx"]}
        if "counter" in args.parts:
            out["counter"] = counter_bench(store, redis_server.url, args)
        if "scrape" in args.parts:
            out["scrape"] = scrape_bench(store, redis_server.url, args.scrapes)
    report(out, args.runs)


def report(out: dict[str, Any], runs: int) -> None:
    """The table (medians), then the JSON document."""
    print(f"{'benchmark (median of ' + str(runs) + ' runs)':<48}{'req/s':>10}{'p99 ms':>9}")
    if "hello" in out:
        h = out["hello"]
        print(
            f"{'hello, bare uvicorn (uvloop+httptools)':<48}{h['uvicorn']['rps']:>10.0f}"
            f"{h['uvicorn']['p99_ms']:>9.2f}"
        )
        print(
            f"{'hello, keel Service':<48}{h['service']['rps']:>10.0f}"
            f"{h['service']['p99_ms']:>9.2f}   {h['ratio']:.2f}x (target >= 0.9x), "
            f"p99 {h['p99_ratio']:.2f}x"
        )
    if "client" in out:
        c = out["client"]
        print(f"{'client, plain httpx to one URL':<48}{c['httpx']:>10.0f}")
        print(
            f"{'client, keel.http.Client to 2 instances':<48}{c['keel']:>10.0f}"
            f"{'':>9}   {c['ratio']:.2f}x (target >= 0.8x)"
        )
    for label, run in out.get("counter", {}).items():
        correct = all(counter_ok(r) for r in run["runs"])
        print(
            f"{'counter /incr, ' + label:<48}{run['rps']:>10.0f}{run['p99_ms']:>9.2f}"
            f"   anchor 8,500; counter {'correct' if correct else 'WRONG'}"
        )
    for label, scrape in out.get("scrape", {}).items():
        print(
            f"{'scrape, ' + label + ', median ms /metrics vs /healthz':<48}"
            f"{scrape['metrics_ms']:>10.2f}{scrape['healthz_ms']:>9.2f}   "
            f"{scrape['exposition_bytes']:,} bytes"
        )
    print(json.dumps({"bench": "http", "results": out}))


if __name__ == "__main__":
    main()

"""gRPC vs HTTP/JSON for the same call, through keel's two clients, in one run.

    python bench/grpc_vs_http.py                          # 5 rounds of 2,000 calls each
    python bench/grpc_vs_http.py --rounds 7 --calls 10000 --in-flight 64

The call is the shop's ``GetUser`` (``examples/shop``): look a user up by id
and get back id, name, email and credit limit.

- gRPC: ``keel.grpc.Channel(store, "bench-users-grpc")`` with the generated
  ``UserServiceStub`` to a ``keel.grpc.Server`` serving the shop's
  ``UserService`` (protobuf on HTTP/2).
- HTTP: ``keel.http.Client(store)`` ``GET http://bench-users-http/users/alice``
  to a ``keel.service.Service`` serving a Starlette endpoint that answers the
  same user as JSON (``response.json()`` decodes it at the caller).

Each server is its own process, started as ``keel run`` starts it (gRPC on
asyncio's loop, HTTP on uvloop with httptools), registered by name in one
SQLite store; the client is this process, asyncio's loop, ``--in-flight``
calls at a time. A third row, for reference, calls the same HTTP server
through a plain ``httpx.AsyncClient`` at its address: keel.http.Client is
built on httpx, and httpx's own cost per request grows with the requests in
flight, so that row tells keel's share from httpx's. Rounds interleave the
sides (in one order in odd rounds, reversed in even ones); the table shows
the medians over rounds of calls/s, p50 and p99 of one call's latency, and CPU
time per call of the client and of the server process. All on one host over
loopback: client and servers share its cores. Prints a table (with, beside
it, the figures the keel.grpc issue quotes from a tutorial, labeled as such:
they are not measured here) and one JSON document. A measurement, not a test.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout: the generated test and example gRPC code

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
from examples.shop import USERS, UserService  # noqa: E402
from examples.shop.protos.users_pb2 import GetUserRequest  # noqa: E402
from examples.shop.protos.users_pb2_grpc import (  # noqa: E402
    UserServiceStub,
    add_UserServiceServicer_to_server,
)
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

import keel  # noqa: E402
from keel.grpc import Channel, Server  # noqa: E402
from keel.http import Client  # noqa: E402
from keel.service import Service, ServiceSettings  # noqa: E402

GRPC_NAME, HTTP_NAME = "bench-users-grpc", "bench-users-http"
CLAIM = "gRPC 12,000 req/s at 8 ms vs REST/JSON 4,500 req/s at 25 ms"
CLAIM_SOURCE = (
    "a tutorial's figures, quoted by the keel.grpc issue: other hardware, other "
    "setup, not measured here"
)


def users_http_app() -> Starlette:
    """``GET /users/{id}``: the same user as ``GetUser``, as JSON (404 for an unknown id)."""

    async def get_user(request: Request) -> Response:
        user = USERS.get(request.path_params["id"])
        if user is None:
            return JSONResponse({"error": "no such user"}, status_code=404)
        return JSONResponse(
            {
                "id": user.id,
                "name": user.name,
                "email": user.email,
                "credit_limit_cents": user.credit_limit_cents,
            }
        )

    return Starlette(routes=[Route("/users/{id}", get_user)])


def serve(kind: str, store: str) -> None:
    """Child process: one server of ``kind`` (grpc or http); prints its port once registered."""
    settings = ServiceSettings(host="127.0.0.1", port=0, drain_delay_s=0.0, grace_s=2.0)
    server: Server | Service
    if kind == "grpc":
        server = Server(GRPC_NAME, store=store, settings=settings, access_log=False)
        server.add(add_UserServiceServicer_to_server, UserService())
    else:
        server = Service(HTTP_NAME, users_http_app(), store=store, settings=settings)

    async def main() -> None:
        async def announce() -> None:
            await server.ready.wait()
            print(server.port, flush=True)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(announce())
            await server.serve()

    if kind == "grpc":
        asyncio.run(main())
    else:
        import uvloop

        uvloop.run(main())


@contextlib.contextmanager
def servers(store: str) -> Iterator[dict[str, tuple[int, int]]]:
    """The gRPC and the HTTP server processes; yields (pid, port) by kind."""
    procs = {
        kind: subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, store],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "KEEL_LOG_LEVEL": "WARNING", "PYTHONWARNINGS": "ignore"},
        )
        for kind in ("grpc", "http")
    }
    try:
        found = {}
        for kind, proc in procs.items():
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the {kind} server ended before it was ready")
            found[kind] = (proc.pid, int(line))
        yield found
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    call: Callable[[], Awaitable[Any]], calls: int, in_flight: int, server_pid: int
) -> dict[str, float]:
    """``calls`` calls, ``in_flight`` at a time: calls/s, latency p50/p99, CPU per call."""
    left = calls
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    server_cpu, client_cpu = cpu_s(server_pid), time.process_time()
    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(in_flight):
            tasks.create_task(worker())
    elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "calls_per_s": calls / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "client_cpu_us": (time.process_time() - client_cpu) / calls * 1e6,
        "server_cpu_us": (cpu_s(server_pid) - server_cpu) / calls * 1e6,
    }


async def bench(
    store_url: str, found: dict[str, tuple[int, int]], args: argparse.Namespace
) -> dict[str, Any]:
    """Interleaved rounds of the same GetUser through keel.grpc.Channel and keel.http.Client."""
    request = GetUserRequest(id="alice")
    pids = {"grpc": found["grpc"][0], "http": found["http"][0], "httpx": found["http"][0]}
    plain_url = f"http://127.0.0.1:{found['http'][1]}/users/alice"
    async with (
        keel.connect(store_url) as store,
        Channel(store, GRPC_NAME) as channel,
        Client(store) as client,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as plain,
    ):
        stub = UserServiceStub(channel)

        async def grpc_call() -> None:
            user = await stub.GetUser(request, timeout=10)
            assert user.credit_limit_cents == 50_000

        async def http_call() -> None:
            answer = await client.get(f"http://{HTTP_NAME}/users/alice", timeout=10)
            assert answer.status_code == 200 and answer.json()["credit_limit_cents"] == 50_000

        async def httpx_call() -> None:
            answer = await plain.get(plain_url, timeout=10)
            assert answer.status_code == 200 and answer.json()["credit_limit_cents"] == 50_000

        sides = {"grpc": grpc_call, "http": http_call, "httpx": httpx_call}
        for kind, call in sides.items():  # connect and warm up
            await drive(call, 1000, args.in_flight, pids[kind])
        rounds: dict[str, list[dict[str, float]]] = {kind: [] for kind in sides}
        for n in range(args.rounds):
            order = list(sides) if n % 2 == 0 else list(reversed(sides))
            for kind in order:
                rounds[kind].append(
                    await drive(sides[kind], args.calls, args.in_flight, pids[kind])
                )
        failures = channel.statistics().failures
    medians = {
        kind: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for kind, runs in rounds.items()
    }
    grpc_rate = medians["grpc"]["calls_per_s"]
    return {
        "in_flight": args.in_flight,
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "median": {k: {m: round(v, 2) for m, v in d.items()} for k, d in medians.items()},
        "ratio_calls_per_s": round(grpc_rate / medians["http"]["calls_per_s"], 2),
        "runs_calls_per_s": {k: [round(r["calls_per_s"]) for r in v] for k, v in rounds.items()},
        "grpc_channel_failures": failures,
        "claim": {"text": CLAIM, "source": CLAIM_SOURCE},
    }


def report(out: dict[str, Any]) -> None:
    """A table, the quoted claim beside it, then the JSON document."""
    m = out["median"]
    print(
        f"GetUser, {out['in_flight']} in flight, {out['calls_per_round']} calls x "
        f"{out['rounds']} interleaved rounds, medians (one host, loopback)"
    )
    header = f"{'':<44}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'client us':>11}{'server us':>11}"
    print(header)
    rows = [
        ("gRPC: keel.grpc.Channel -> grpc.Server", m["grpc"]),
        ("HTTP/JSON: keel.http.Client -> Service", m["http"]),
        ("  reference: plain httpx -> same Service", m["httpx"]),
    ]
    for label, r in rows:
        print(
            f"{label:<44}{r['calls_per_s']:>9.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['client_cpu_us']:>11.0f}{r['server_cpu_us']:>11.0f}"
        )
    print(f"{'gRPC / HTTP calls/s':<44}{out['ratio_calls_per_s']:>9}")
    print("(client us, server us: CPU time per call of the client and of the server process)")
    print(f"\nclaim, not ours ({out['claim']['source']}):\n  {out['claim']['text']}\n")
    print(json.dumps(out, indent=2))


def main() -> None:
    """Parse arguments, start both servers, run the rounds, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000, help="calls per round and side")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--in-flight", type=int, default=64, help="concurrent calls")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/keel.db"
        with servers(store) as found:
            out = asyncio.run(bench(store, found, args))
    report(out)


if __name__ == "__main__":
    main()

"""Where the gateway's time goes: the hello upstream, a bare relay and the keel gateway.

    python bench/relay_floor.py                 # 5 interleaved rounds of 4 s
    python bench/relay_floor.py --rounds 9 --duration 3

The bare relay (``--serve-floor``) is the least a Python proxy on uvloop can
do per request: httptools parses the request, its head goes to an idle
pooled upstream connection with one ``X-Forwarded-For`` line added, and the
parsed response goes back in one write. No routing, limits, breakers,
retries, deadlines, request ids, metrics or header policy; never use it for
anything else. Set beside the keel gateway (routes from the config center,
no access log, as ``bench/gateway.py`` runs it) it splits the gateway's CPU
per request into what any Python relay pays (the system calls, the event
loop, parsing) and what keel's features and its server side add.

Each row: requests/s with ``wrk -t1 -c64``, and the CPU microseconds per
request of the process in front (user and system apart, from
``/proc/<pid>/stat``) and of the upstream. Rounds are interleaved; medians
are printed, with each row's ratio to the direct call. The machine's cores
are shared by wrk and every server: a measurement, never asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
from collections import deque
from typing import Any

from gateway import child, free_port, prepare_keel_gateway, wait_port, wrk

# -- the bare relay (a child process) ------------------------------------------------

_CONNECTING: set[asyncio.Future[None]] = set()


class _Upstream(asyncio.Protocol):
    """One pooled connection to the upstream; calls back with each whole response."""

    def __init__(self, idle: deque[_Upstream]) -> None:
        import httptools

        self.idle = idle
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.reply: Any = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(self)

    def on_message_begin(self) -> None:
        self.headers, self.body = [], []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        reply, self.reply = self.reply, None
        self.idle.append(self)
        reply(self.parser.get_status_code(), self.headers, b"".join(self.body))


class _Front(asyncio.Protocol):
    """One client connection: each parsed request is relayed as soon as its head is in."""

    def __init__(self, upstream: tuple[str, int], idle: deque[_Upstream]) -> None:
        import httptools

        self.upstream, self.idle = upstream, idle
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url, self.headers = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        head = [self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"x-forwarded-for: 127.0.0.1\r\n\r\n")
        data = b"".join(head)
        if self.idle:
            conn = self.idle.pop()
            conn.reply = self.answer
            conn.transport.write(data)
        else:
            task = asyncio.ensure_future(self._connect(data))
            _CONNECTING.add(task)
            task.add_done_callback(_CONNECTING.discard)

    async def _connect(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Upstream(self.idle), *self.upstream)
        conn.reply = self.answer
        conn.transport.write(data)

    def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        out = [b"HTTP/1.1 %d OK\r\n" % status]
        for name, value in headers:
            out += (name, b": ", value, b"\r\n")
        out += (b"\r\n", body)
        if not self.transport.is_closing():  # wrk leaves with requests in flight
            self.transport.write(b"".join(out))


def serve_floor(port: int, upstream_port: int) -> None:
    """Child: the bare relay on ``port`` in front of the upstream on ``upstream_port``."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        idle: deque[_Upstream] = deque()
        upstream = ("127.0.0.1", upstream_port)
        server = await loop.create_server(lambda: _Front(upstream, idle), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- the run ----------------------------------------------------------------------------


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def measure(port: int, front: int, upstream: int, duration_s: float) -> dict[str, float]:
    """One wrk run against ``port``: requests/s and CPU us per request (front split, upstream)."""
    (fu, fs), (uu, us) = cpu_split(front), cpu_split(upstream)
    row = wrk(port, 64, duration_s)
    n = row["requests"]
    (fu2, fs2), (uu2, us2) = cpu_split(front), cpu_split(upstream)
    return {
        "rps": row["rps"],
        "user_us": (fu2 - fu) / n * 1e6,
        "sys_us": (fs2 - fs) / n * 1e6,
        "upstream_us": (uu2 + us2 - uu - us) / n * 1e6,
    }


def run(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="keel-bench-floor-")
    store_url = f"sqlite:///{tmp}/keel.db"
    try:
        hello, floor, gw = free_port(), free_port(), free_port()
        prepare_keel_gateway(tmp, store_url)
        with contextlib.ExitStack() as stack:
            up = stack.enter_context(child("--serve-hello", str(hello), "--store", store_url)).pid
            wait_port(hello)
            here = str(Path(__file__).resolve())
            floor_pid = stack.enter_context(
                child("--serve-floor", str(floor), str(hello), script=here)
            ).pid
            gw_pid = stack.enter_context(child("--serve-keel-gateway", str(gw), store_url)).pid
            wait_port(floor)
            wait_port(gw)
            targets = [
                ("direct", hello, up),
                ("bare relay", floor, floor_pid),
                ("gateway", gw, gw_pid),
            ]
            for _, port, _ in targets:
                wrk(port, 64, 1)  # warm-up
            rows: dict[str, list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                for name, port, pid in targets:
                    rows.setdefault(name, []).append(measure(port, pid, up, args.duration))
        report(rows, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(rows: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    direct = median("direct", "rps")
    print(f"\nwrk -t1 -c64 -d{args.duration:g}s, medians of {args.rounds} interleaved rounds")
    print(f"{'':12} {'req/s':>8} {'x direct':>9} {'user us':>8} {'sys us':>7} {'upstream us':>12}")
    for name in rows:
        print(
            f"{name:12} {median(name, 'rps'):8.0f} {median(name, 'rps') / direct:9.2f} "
            f"{median(name, 'user_us'):8.1f} {median(name, 'sys_us'):7.1f} "
            f"{median(name, 'upstream_us'):12.1f}"
        )
    extra = median("gateway", "user_us") - median("bare relay", "user_us")
    print(f"\nthe gateway's user CPU above the bare relay's: {extra:.1f} us per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--serve-floor", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor is not None:
        serve_floor(*args.serve_floor)
    elif shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    else:
        run(args)


if __name__ == "__main__":
    main()

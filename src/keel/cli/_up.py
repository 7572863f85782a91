"""``keel up``: the local environment on the embedded store, with a live terminal view.

It opens the store (the SQLite file by default), joins it with a session of its
own (a lease with a presence key under ``up/``), campaigns in the ``keel/up``
election, and runs a small demo that takes the ``demo/heartbeat`` lock every
two seconds to write a counter guarded by its fencing token, a scheduler with
the demo heartbeat job, a health checker, the config canary controller, the
web console on port 8470, and,
when the working directory has it, ``examples/shop`` (a gateway on port 8080
in front of orders, inventory x2, payment, and users over gRPC; see
:mod:`keel.cli._up_shop`).

On a terminal it draws :class:`~keel.cli._up_view.UpView`, fitted to the
terminal's size; without one (piped, or under a service manager) it prints one
plain line per change of a service, job, lock or problem. The view is fed by
one watch started at the revision of the initial listing, so its counts are
exact, not polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from rich.live import Live

import keel
from keel.cli._common import console, printable
from keel.cli._up_edge import ConsoleWatch, run_console
from keel.cli._up_events import counted_orders, read_lag
from keel.cli._up_lines import PlainLines
from keel.cli._up_shop import ShopWatch
from keel.cli._up_view import UpView, area_of
from keel.config import CanaryController, ConfigCenter, LiveConfig
from keel.coord import Election, Lock, Session
from keel.errors import ConflictError
from keel.events import Bus
from keel.registry import HealthChecker
from keel.schedule import Scheduler, read_jobs, register_demo
from keel.store import Put, Store, parse_url, redact_url

__all__ = [
    "CONSOLE_PORT",
    "DEMO_CONFIG",
    "SHOP_PORT",
    "UpView",
    "absolute_url",
    "area_of",
    "run_up",
]

DEMO_CONFIG = "keel-up.yaml"
_DEMO_DOCUMENT = "# Change me: keel config publish keel-up.yaml FILE\nheartbeat_interval_s: 2\n"
_MAX_LEASES_SHOWN = 8
_RECENT_RUNS = 8
SHOP_PORT = 8080
CONSOLE_PORT = 8470


def absolute_url(url: str) -> str:
    """The URL with a SQLite path made absolute, so it says which file, from anywhere."""
    parsed = parse_url(url)
    if parsed.scheme != "sqlite":
        return url
    _, sep, query = url.partition("?")
    return f"sqlite:///{Path(parsed.path).resolve()}" + (f"?{query}" if sep else "")


async def _refresh(store: Store, view: UpView, bus: Bus | None = None) -> None:
    view.status = await store.status()
    view.jobs = await read_jobs(store, recent=_RECENT_RUNS)
    if bus is not None:
        view.event_lag = await read_lag(store, bus)
        view.orders_counted = await counted_orders(store)
    infos = []
    for lease_id in (await store.leases())[:_MAX_LEASES_SHOWN]:
        info = await store.time_to_live(lease_id)
        if info is not None:
            infos.append(info)
    view.leases = infos


async def _lead(session: Session, presence: bytes) -> None:
    """Stand in the keel/up election and hold leadership until cancelled."""
    async with Election(session, "keel/up").campaign(presence) as leadership:
        await leadership.lost


async def _heartbeat(session: Session, live: LiveConfig[dict[str, Any]]) -> None:
    """The demo: take a lock and write a counter guarded by its fencing token.

    The pace comes from the live-bound ``keel-up.yaml`` config: publish a new
    ``heartbeat_interval_s`` and the next beat follows it.
    """
    beats = 0
    while not session.lost.is_set():
        async with Lock(session, "demo/heartbeat") as held:
            beats += 1
            body = json.dumps({"beat": beats, "token": held.fencing_token}).encode()
            await session.store.txn([held.guard()], [Put("demo/heartbeat", body)])
            await asyncio.sleep(0.5)  # hold it a moment, so the view shows an owner
        interval = live.value.get("heartbeat_interval_s", 2)
        await asyncio.sleep(max(0.1, float(interval) if isinstance(interval, int | float) else 2))


async def _jobs_demo(store: Store) -> None:
    """A worker and planner candidate running the demo heartbeat job."""
    scheduler = Scheduler(store, ttl_s=10)
    register_demo(scheduler)
    await scheduler.run(handle_sigterm=False)


async def _demo_config(store: Store, session: Session) -> LiveConfig[dict[str, Any]]:
    """Publish the demo config if it is missing, and bind it live."""
    center = ConfigCenter(store)
    with contextlib.suppress(ConflictError):
        await center.publish(DEMO_CONFIG, _DEMO_DOCUMENT, author="keel up", expected_version=0)
    return await center.bind(DEMO_CONFIG, dict[str, Any], session=session, client_id="keel-up")


async def _follow(store: Store, view: UpView, start_revision: int) -> None:
    async with store.watch("", prefix=True, start_revision=start_revision) as events:
        async for event in events:
            view.apply(event)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def run_up(
    url: str,
    *,
    duration_s: float | None = None,
    once: bool = False,
    shop_port: int = SHOP_PORT,
    console_port: int = CONSOLE_PORT,
    plain: bool | None = None,
) -> UpView:
    """Run the local environment until Ctrl-C/SIGTERM (or ``duration_s``); return the last view.

    Args:
        url: the store URL (the embedded SQLite file by default).
        duration_s: stop by itself after this many seconds.
        once: print one snapshot and return (for scripts and CI).
        shop_port: the port of the example shop's gateway (its five services
            take the next ports).
        console_port: the port of the web console (0: a free one).
        plain: print one line per change instead of the live view (default:
            when stdout is not a terminal).
    """
    url = absolute_url(url)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    plain = not console.is_terminal if plain is None else plain
    async with keel.connect(url) as store, Session(store, ttl_s=10) as session, Bus(store) as bus:
        presence = {"host": socket.gethostname(), "pid": os.getpid(), "version": keel.__version__}
        me = json.dumps(presence).encode()
        await store.put(f"up/{presence['host']}-{presence['pid']}", me, lease=session.lease_id)
        config = await _demo_config(store, session)
        async with config:
            kvs, revision = await store.range("")
            view = UpView(url, shop=ShopWatch(shop_port), console_watch=ConsoleWatch(console_port))
            view.load(kvs)
            await _refresh(store, view, bus)
            if once:
                columns = 0 if console.is_terminal else 1
                console.print(view.render(console.width, 10_000, columns=columns))
                return view
            await _run_live(
                store, session, view, revision, me, config, stop, duration_s, plain, bus
            )
        if session.lost.is_set():
            console.print(f"keel up: session lost: {session.lost.reason}", markup=False)
    return view


async def _run_live(
    store: Store,
    session: Session,
    view: UpView,
    revision: int,
    me: bytes,
    config: LiveConfig[dict[str, Any]],
    stop: asyncio.Event,
    duration_s: float | None,
    plain: bool,
    bus: Bus,
) -> None:
    """The background parts of keel up and the screen (or status line) loop."""
    assert view.shop is not None and view.console_watch is not None
    async with asyncio.TaskGroup() as tasks:
        background = [
            tasks.create_task(_follow(store, view, revision + 1)),
            tasks.create_task(_lead(session, me)),
            tasks.create_task(_heartbeat(session, config)),
            tasks.create_task(HealthChecker(session, node=f"keel-up-{os.getpid()}").run()),
            tasks.create_task(CanaryController(session, node=f"keel-up-{os.getpid()}").run()),
            tasks.create_task(_jobs_demo(store)),
            tasks.create_task(view.shop.run(view.url)),
        ]
        console_task = tasks.create_task(run_console(store, view.console_watch, stop))
        deadline = time.monotonic() + duration_s if duration_s else None

        def running() -> bool:
            late = deadline is not None and time.monotonic() >= deadline
            return not (stop.is_set() or session.lost.is_set() or late)

        if plain:
            await _print_lines(store, view, stop, running, bus)
        else:
            await _draw(store, view, stop, running, bus)
        stop.set()  # the console shuts down on its own (cancelling uvicorn logs a traceback)
        await asyncio.wait([console_task], timeout=3)
        for task in [*background, console_task]:
            task.cancel()


async def _draw(store: Store, view: UpView, stop: asyncio.Event, running: Any, bus: Bus) -> None:
    """Redraw the view, fitted to the terminal, twice a second."""

    def screen() -> Any:
        size = console.size
        return view.render(size.width, size.height)

    # the store's full URL stays in the scrollback, however narrow the header
    console.print(
        f"keel up: store {printable(redact_url(view.url))} (Ctrl-C to stop)", markup=False
    )
    with Live(screen(), console=console, auto_refresh=False, redirect_stdout=False) as live:
        while running():
            await _wait(stop, 0.5)
            await _refresh(store, view, bus)
            live.update(screen(), refresh=True)
    console.line()  # the last frame stays; what follows starts on a line of its own


async def _print_lines(
    store: Store, view: UpView, stop: asyncio.Event, running: Any, bus: Bus
) -> None:
    """Without a terminal: one plain line per change, flushed as it happens."""
    lines = PlainLines()
    while True:
        for text in lines.changes(view):
            print(text, flush=True)
        if not running():
            break
        await _wait(stop, 0.5)
        await _refresh(store, view, bus)

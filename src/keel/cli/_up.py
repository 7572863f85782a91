"""``keel up``: the local environment on the embedded store, with a live terminal view.

It opens the store (the SQLite file by default), joins it with a session of its
own (a lease with a presence key under ``up/``), campaigns in the ``keel/up``
election, and runs a small demo that takes the ``demo/heartbeat`` lock every
two seconds to write a counter guarded by its fencing token. It shows, until
Ctrl-C: the store's revision and size, keys counted by area (the first path
segment: ``services``, ``config``, ``locks``...), live leases, registered
services and their health (it also runs a health checker candidate), locks
and leaders with their fencing tokens, and a tail of watch events. The view is
fed by one watch started at the revision of the initial listing, so its
counts are exact, not polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

import keel
from keel.cli._common import console
from keel.config import ConfigCenter, ConfigDocument, LiveConfig
from keel.coord import Election, Lock, Session, group_lines
from keel.coord._inspect import KINDS
from keel.errors import ConflictError, ValidationError
from keel.registry import HealthChecker, decode_instance
from keel.schedule import JobView, Scheduler, read_jobs, register_demo
from keel.store import (
    Event,
    EventType,
    KeyValue,
    LeaseInfo,
    Put,
    Store,
    StoreStatus,
    redact_url,
)

__all__ = ["UpView", "run_up"]

_TAIL = 12
_TRACKED = (*KINDS, "services/", "health/", "config/", "config-gray/")
DEMO_CONFIG = "keel-up.yaml"
_DEMO_DOCUMENT = "# Change me: keel config publish keel-up.yaml FILE\nheartbeat_interval_s: 2\n"
_MAX_LEASES_SHOWN = 8


def area_of(key: str) -> str:
    """The area of a key: its first path segment (``services/orders/1`` → ``services``)."""
    head, sep, _ = key.partition("/")
    return head if sep else "(top)"


@dataclass
class UpView:
    """What ``keel up`` shows; updated from the watch, rendered by :meth:`render`."""

    url: str
    keys: dict[str, str] = field(default_factory=dict)
    coord: dict[str, KeyValue] = field(default_factory=dict)
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=_TAIL))
    event_count: int = 0
    status: StoreStatus | None = None
    leases: list[LeaseInfo] = field(default_factory=list)
    jobs: list[JobView] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def load(self, kvs: list[KeyValue]) -> None:
        """Seed the key index from the initial listing."""
        self.keys = {kv.key: area_of(kv.key) for kv in kvs}
        self.coord = {kv.key: kv for kv in kvs if kv.key.startswith(_TRACKED)}

    def apply(self, event: Event) -> None:
        """Fold one watch event into the view."""
        key = event.kv.key
        if event.type is EventType.PUT:
            self.keys[key] = area_of(key)
            if key.startswith(_TRACKED):
                self.coord[key] = event.kv
        else:
            self.keys.pop(key, None)
            self.coord.pop(key, None)
        self.events.append(event)
        self.event_count += 1

    def render(self) -> RenderableType:
        """The whole screen as one rich renderable."""
        return Group(
            self._header(),
            self._areas_and_leases(),
            self._services(),
            self._configs(),
            self._jobs(),
            self._coordination(),
            self._tail(),
        )

    def _jobs(self) -> RenderableType:
        table = Table(title="jobs and recent runs", title_justify="left", expand=True)
        for column in ("job", "trigger", "next fire (UTC)", "last run", "took", "workers"):
            table.add_column(column, overflow="ellipsis", no_wrap=True)
        for job in self.jobs:
            shown = {k: v for k, v in job.definition.trigger.items() if v not in (None, 0, 0.0)}
            trigger = ", ".join(f"{k}={v}" for k, v in shown.items()) or "manual"
            nxt = job.next_fire.strftime("%H:%M:%S") if job.next_fire else ""
            last = job.recent[0] if job.recent else None
            took = last.duration_s if last is not None else None
            table.add_row(
                job.definition.name,
                trigger,
                nxt,
                f"{last.status.value} (token {last.token})" if last is not None else "",
                f"{took * 1000:.0f} ms" if took is not None else "",
                str(len(job.workers)) if job.workers else "none",
            )
        return table

    def _configs(self) -> RenderableType:
        table = Table(title="configs", title_justify="left", expand=True)
        for column in ("config", "version", "format", "author", "gray"):
            table.add_column(column, overflow="ellipsis", no_wrap=True)
        for key, kv in sorted(self.coord.items()):
            if not key.startswith("config/"):
                continue
            try:
                doc = ConfigDocument.decode(kv.value)
            except (ValueError, KeyError):
                continue
            gray = "yes" if f"config-gray/{doc.name}" in self.coord else ""
            table.add_row(doc.name, str(doc.version), doc.format, doc.author, gray)
        return table

    def _services(self) -> RenderableType:
        table = Table(title="services", title_justify="left", expand=True)
        for column in ("service", "instance", "url", "zone", "status", "health"):
            table.add_column(column, overflow="ellipsis", no_wrap=True)
        for key, kv in sorted(self.coord.items()):
            if not key.startswith("services/"):
                continue
            try:
                inst = decode_instance(key, kv.value)
            except ValidationError:
                continue
            mark = self.coord.get(f"health/{inst.service}/{inst.id}")
            health = "failing" if mark is not None else ("checked" if inst.check else "lease")
            table.add_row(inst.service, inst.id, inst.url, inst.zone, inst.status, health)
        return table

    def _coordination(self) -> RenderableType:
        table = Table(title="locks and leaders", title_justify="left", expand=True)
        for column in ("kind", "name", "owner / leader", "token", "waiting"):
            table.add_column(column, overflow="ellipsis", no_wrap=True)
        for line in group_lines(self.coord.values()):
            owner = line.owner
            shown = ""
            if owner is not None:
                shown = owner.value[:60].decode("utf-8", "replace") or f"lease {owner.lease:x}"
            table.add_row(line.kind, line.name, shown, str(line.fencing_token), str(line.waiters))
        return table

    def _header(self) -> RenderableType:
        s = self.status
        line = f"[bold]keel up[/]  store [cyan]{escape(redact_url(self.url))}[/]"
        if s is not None:
            size = f"{s.size_bytes / 1024:.0f} KiB" if s.size_bytes is not None else "?"
            line += (
                f"\nrevision [bold]{s.revision}[/]  keys {s.keys}  leases {s.leases}  "
                f"size {size}  events seen {self.event_count}  "
                f"up {time.monotonic() - self.started:.0f}s"
            )
        return Panel(line + "\n[dim]Ctrl-C to stop[/]", border_style="blue")

    def _areas_and_leases(self) -> RenderableType:
        areas = Table(title="keys by area", title_justify="left", expand=True)
        areas.add_column("area")
        areas.add_column("keys", justify="right")
        for area, count in sorted(Counter(self.keys.values()).items()):
            areas.add_row(area, str(count))
        leases = Table(title="leases", title_justify="left", expand=True)
        for column in ("lease", "ttl", "keys"):
            leases.add_column(column)
        for info in self.leases:
            shown = ", ".join(info.keys[:3]) + (" …" if len(info.keys) > 3 else "")
            leases.add_row(f"{info.id:x}", f"{info.ttl}/{info.granted_ttl}s", shown)
        grid = Table.grid(expand=True, padding=(0, 2))
        grid.add_column(ratio=1)
        grid.add_column(ratio=2)
        grid.add_row(areas, leases)
        return grid

    def _tail(self) -> RenderableType:
        table = Table(title="recent events", title_justify="left", expand=True)
        table.add_column("rev", no_wrap=True, min_width=5)
        table.add_column("type", no_wrap=True, min_width=6)
        table.add_column("key", overflow="ellipsis", no_wrap=True, ratio=2)
        table.add_column("value", overflow="ellipsis", no_wrap=True, ratio=3)
        for ev in self.events:
            value = ev.kv.value[:80].decode("utf-8", "replace") if ev.type is EventType.PUT else ""
            style = "green" if ev.type is EventType.PUT else "red"
            table.add_row(str(ev.revision), f"[{style}]{ev.type.value}[/]", ev.kv.key, value)
        return table


async def _refresh(store: Store, view: UpView) -> None:
    view.status = await store.status()
    view.jobs = await read_jobs(store, recent=3)
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


async def _example_shop(url: str) -> None:
    """Run examples/shop (orders, inventory x2, payment, users over gRPC) beside keel up, if here.

    The example lives in the repository, not in the package, so it runs as
    ``python -m examples.shop`` from the working directory when that has it
    (``make up`` does), on the same store, with orders on port 8080.
    """
    if url.startswith("memory:") or not (Path.cwd() / "examples" / "shop").is_dir():
        return
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.shop",
        "--store",
        url,
        "--base-port",
        "8080",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


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


async def run_up(url: str, *, duration_s: float | None = None, once: bool = False) -> UpView:
    """Run the local environment until Ctrl-C/SIGTERM (or ``duration_s``); return the last view.

    Args:
        url: the store URL (the embedded SQLite file by default).
        duration_s: stop by itself after this many seconds.
        once: render one snapshot and return (for scripts and CI).
    """
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with keel.connect(url) as store, Session(store, ttl_s=10) as session:
        presence = {"host": socket.gethostname(), "pid": os.getpid(), "version": keel.__version__}
        me = json.dumps(presence).encode()
        await store.put(f"up/{presence['host']}-{presence['pid']}", me, lease=session.lease_id)
        config = await _demo_config(store, session)
        async with config:
            kvs, revision = await store.range("")
            view = UpView(url)
            view.load(kvs)
            await _refresh(store, view)
            if once:
                console.print(view.render())
                return view
            await _run_live(store, session, view, revision, me, config, stop, duration_s)
        if session.lost.is_set():
            console.print(f"[red]keel up: session lost: {session.lost.reason}[/]")
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
) -> None:
    """The background parts of keel up and the screen refresh loop."""
    async with asyncio.TaskGroup() as tasks:
        background = [
            tasks.create_task(_follow(store, view, revision + 1)),
            tasks.create_task(_lead(session, me)),
            tasks.create_task(_heartbeat(session, config)),
            tasks.create_task(HealthChecker(session, node=f"keel-up-{os.getpid()}").run()),
            tasks.create_task(_jobs_demo(store)),
            tasks.create_task(_example_shop(view.url)),
        ]
        deadline = time.monotonic() + duration_s if duration_s else None
        with Live(
            view.render(), console=console, refresh_per_second=4, redirect_stdout=False
        ) as live:
            while not stop.is_set() and not session.lost.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                await _wait(stop, 0.5)
                await _refresh(store, view)
                live.update(view.render())
        for task in background:
            task.cancel()

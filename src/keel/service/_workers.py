"""Worker processes: one Service instance served by several processes on one port.

One Python process serves one core at most (the GIL). ``workers=N`` starts N
worker processes that each bind the service's port with ``SO_REUSEPORT``, so
the kernel spreads connections over their listeners (on Linux, by a hash of
the connection's addresses), as ``uvicorn --workers`` or gunicorn do. The
Service process becomes the supervisor: it holds the store session, the
registration (one instance: one address and port, whatever serves behind it)
and the drain order, and runs no request handler itself, so the session's
threads and timers never share a GIL with the requests.

The supervisor speaks to each worker over a private socketpair, one line per
message. Supervisor to worker: a JSON :class:`WorkerSpec` first, then
``draining`` (``/readyz`` fails), ``session-lost``, ``stop`` (close the
listener, drain in-flight requests for up to ``grace_s``, exit) and
``force`` (stop waiting for them). Worker to supervisor: ``ready`` once its
app's startup finished and its listener is up, or ``failed <reason>``. End of
file on a worker's side means its supervisor died: the worker stops too, so
no orphan keeps serving an instance nobody registers.

Scrapes: ``/metrics`` is answered by whichever worker accepted the
connection, yet shows the whole instance. That worker sends ``scrape N``;
the supervisor sends ``collect M`` to every worker, each answers ``metrics M
<exposition as a JSON string>``, and the supervisor merges those with its
own series (:func:`keel.observe.merge.merge_expositions`) and answers
``merged N <JSON string>``. A worker that does not answer within
``SCRAPE_WAIT_S`` is left out of that scrape, and
``keel_service_workers_merged`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from keel.errors import KeelError
from keel.observe.merge import merge_expositions

__all__ = ["LINE_LIMIT", "SCRAPE_WAIT_S", "WorkerPool", "WorkerSpec"]

log = logging.getLogger("keel.service")
LINE_LIMIT: Final = 64 * 1024 * 1024  # one control line carries a whole exposition
SCRAPE_WAIT_S: Final = 2.0  # how long a scrape waits for each worker's series


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """What a worker process serves; sent to it as its first line."""

    app: str
    service: str
    host: str
    port: int
    grace_s: float
    log_level: str
    sys_path: tuple[str, ...]


class _Worker:
    """The supervisor's handle on one worker process."""

    def __init__(
        self, index: int, proc: asyncio.subprocess.Process, writer: asyncio.StreamWriter
    ) -> None:
        self.index = index
        self.proc = proc
        self.writer = writer

    def send(self, word: str) -> None:
        if not self.writer.is_closing():
            self.writer.write(word.encode() + b"\n")


class WorkerPool:
    """N worker processes serving ``spec`` on one port; started, told, stopped together."""

    def __init__(
        self, spec: WorkerSpec, count: int, *, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self.spec = spec
        self.count = count
        self.registry = registry
        self.workers: list[_Worker] = []
        self._readers: list[asyncio.StreamReader] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._collects: dict[tuple[int, int], asyncio.Future[str]] = {}
        self._collect_id = 0

    async def start(self) -> None:
        """Start every worker and wait until each reports ready.

        Raises:
            KeelError: a worker failed to import or start its app, or exited.
        """
        replies = [await self._spawn(index) for index in range(self.count)]
        for worker, reader in zip(self.workers, replies, strict=True):
            line = (await reader.readline()).decode().strip()
            if line != "ready":
                reason = line.removeprefix("failed ") or f"exit code {await worker.proc.wait()}"
                raise KeelError(f"service {self.spec.service!r} worker {worker.index}: {reason}")
        for worker, reader in zip(self.workers, replies, strict=True):
            self._start(self._listen(worker, reader))

    async def _spawn(self, index: int) -> asyncio.StreamReader:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "keel.service._worker",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=LINE_LIMIT)
        worker = _Worker(index, proc, writer)
        self.workers.append(worker)
        worker.send(json.dumps(dataclasses.asdict(self.spec)))
        return reader

    # -- scrapes ----------------------------------------------------------------

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        """Serve one worker's lines after ``ready``: scrape requests and collected series."""
        while line := (await reader.readline()).decode():
            word, _, rest = line.rstrip("\n").partition(" ")
            number, _, payload = rest.partition(" ")
            if word == "scrape":
                self._start(self._answer_scrape(worker, number))
            elif word == "metrics":
                future = self._collects.get((worker.index, int(number)))
                if future is not None and not future.done():
                    future.set_result(json.loads(payload))

    async def _answer_scrape(self, asking: _Worker, number: str) -> None:
        text = await self.scrape()
        asking.send(f"merged {number} {json.dumps(text)}")

    async def scrape(self) -> str:
        """The instance's series: every worker's (those that answer in time) and ours, merged."""
        self._collect_id += 1
        collect = self._collect_id
        loop = asyncio.get_running_loop()
        live = [w for w in self.workers if w.proc.returncode is None]
        waits: dict[asyncio.Future[str], _Worker] = {}
        for worker in live:
            future: asyncio.Future[str] = loop.create_future()
            self._collects[worker.index, collect] = future
            waits[future] = worker
            worker.send(f"collect {collect}")
        try:
            if waits:
                await asyncio.wait(waits, timeout=SCRAPE_WAIT_S)
        finally:
            for worker in live:
                self._collects.pop((worker.index, collect), None)
        parts = [(str(waits[f].index), f.result()) for f in waits if f.done()]
        missing = sorted(w.index for f, w in waits.items() if not f.done())
        if missing:
            log.warning("service %s: scrape without workers %s", self.spec.service, missing)
        parts.append(("supervisor", generate_latest(self.registry).decode()))
        parts.append(("", self._pool_series(len(parts) - 1)))
        return await asyncio.to_thread(lambda: merge_expositions(parts).decode())

    def _pool_series(self, merged: int) -> str:
        service = json.dumps(self.spec.service)
        return (
            "# HELP keel_service_workers Worker processes this instance runs.\n"
            "# TYPE keel_service_workers gauge\n"
            f"keel_service_workers{{service={service}}} {self.count}\n"
            "# HELP keel_service_workers_merged Worker processes whose series this scrape "
            "merged.\n"
            "# TYPE keel_service_workers_merged gauge\n"
            f"keel_service_workers_merged{{service={service}}} {merged}\n"
        )

    # -- control ----------------------------------------------------------------

    def broadcast(self, word: str) -> None:
        """Send one control word to every worker."""
        for worker in self.workers:
            worker.send(word)

    async def first_exit(self) -> tuple[int, int]:
        """Wait until some worker exits; return its index and exit code."""
        waits = {asyncio.ensure_future(w.proc.wait()): w.index for w in self.workers}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        first = done.pop()
        return waits[first], first.result()

    async def stop(self, timeout_s: float) -> None:
        """Tell every worker to drain and exit; kill those still running after ``timeout_s``."""
        self.broadcast("stop")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for worker in self.workers:
                    await worker.proc.wait()
        await self.close()

    async def close(self) -> None:
        """Kill whatever still runs, reap everything, close the control sockets."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers:
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
            await worker.proc.wait()
            worker.writer.close()

    def __repr__(self) -> str:
        running = sum(w.proc.returncode is None for w in self.workers)
        spec = self.spec
        return f"<WorkerPool {spec.service} port={spec.port} running={running}/{self.count}>"

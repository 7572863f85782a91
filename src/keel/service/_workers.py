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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import sys
from dataclasses import dataclass

from keel.errors import KeelError

__all__ = ["WorkerPool", "WorkerSpec"]


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

    def __init__(self, spec: WorkerSpec, count: int) -> None:
        self.spec = spec
        self.count = count
        self.workers: list[_Worker] = []

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
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker = _Worker(index, proc, writer)
        self.workers.append(worker)
        worker.send(json.dumps(dataclasses.asdict(self.spec)))
        return reader

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

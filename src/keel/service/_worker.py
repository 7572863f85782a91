"""A worker process of a Service: ``python -m keel.service._worker FD``.

Started by :class:`keel.service._workers.WorkerPool`, never by hand: reads its
:class:`~keel.service._workers.WorkerSpec` from the control socket ``FD``,
serves the app on the shared port and obeys the supervisor's control words
(see :mod:`keel.service._workers` for the protocol). Its ``/metrics`` asks the
supervisor for the whole instance's series. Kept out of the package's
imports so ``-m`` runs it fresh.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from keel.errors import KeelError
from keel.observe import http_metrics
from keel.service._asgi import KeelMiddleware, Probe
from keel.service._server import Server, bind, import_app, server_config
from keel.service._workers import LINE_LIMIT, SCRAPE_WAIT_S, WorkerSpec

__all__ = ["main"]

_SCRAPE_TIMEOUT_S = SCRAPE_WAIT_S + 3.0  # the supervisor waits for the others, then merges


async def _serve(fd: int) -> int:
    """A worker's life: read its spec, serve the app on the shared port, obey the supervisor."""
    reader, writer = await asyncio.open_unix_connection(
        sock=socket.socket(fileno=fd), limit=LINE_LIMIT
    )
    spec = WorkerSpec(**json.loads(await reader.readline()))
    sys.path[:] = spec.sys_path
    try:
        app = import_app(spec.app)
    except Exception as exc:
        writer.write(f"failed {exc}\n".replace("\n", " ").strip().encode() + b"\n")
        await writer.drain()
        return 1
    probe = Probe()
    link = _Link(writer, REGISTRY)
    server = Server(
        server_config(
            KeelMiddleware(
                app,
                service=spec.service,
                probe=probe,
                metrics=http_metrics(),
                registry=link.registry,
                exposition=link.scrape,
            ),
            grace_s=spec.grace_s,
            log_level=spec.log_level,
        )
    )
    serving = asyncio.ensure_future(
        server.serve(sockets=[bind(spec.host, spec.port, reuse_port=True)])
    )
    started = asyncio.ensure_future(server.started_event.wait())
    await asyncio.wait([started, serving], return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
        writer.write(b"failed the app's startup failed (see the worker's log)\n")
        await writer.drain()
        return 1
    probe.started = True
    writer.write(b"ready\n")
    following = asyncio.ensure_future(_follow(reader, server, probe, link))
    await serving
    following.cancel()
    writer.close()
    return 0


class _Link:
    """This worker's side of scrapes: asks the supervisor, answers its collects."""

    def __init__(self, writer: asyncio.StreamWriter, registry: CollectorRegistry) -> None:
        self._writer = writer
        self.registry = registry
        self._asked: dict[int, asyncio.Future[str]] = {}
        self._next = 0

    async def scrape(self) -> bytes:
        """The whole instance's series, merged by the supervisor.

        Raises:
            KeelError: the supervisor did not answer in time, or is gone.
        """
        if self._writer.is_closing():
            raise KeelError("the service's supervisor is gone: no instance metrics")
        self._next += 1
        number = self._next
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._asked[number] = future
        self._writer.write(f"scrape {number}\n".encode())
        try:
            async with asyncio.timeout(_SCRAPE_TIMEOUT_S):
                return (await future).encode()
        except TimeoutError:
            raise KeelError(
                f"the service's supervisor did not answer the scrape within "
                f"{_SCRAPE_TIMEOUT_S:g}s: retry the scrape"
            ) from None
        finally:
            self._asked.pop(number, None)

    def merged(self, number: int, text: str) -> None:
        future = self._asked.get(number)
        if future is not None and not future.done():
            future.set_result(text)

    def collect(self, number: int) -> None:
        text = generate_latest(self.registry).decode()
        self._writer.write(f"metrics {number} {json.dumps(text)}\n".encode())


async def _follow(reader: asyncio.StreamReader, server: Server, probe: Probe, link: _Link) -> None:
    """Apply the supervisor's control words until it hangs up."""
    while True:
        line = await reader.readline()
        word, _, rest = line.strip().partition(b" ")
        if word == b"collect":
            link.collect(int(rest))
        elif word == b"merged":
            number, _, payload = rest.partition(b" ")
            link.merged(int(number), json.loads(payload))
        elif word == b"draining":
            probe.draining = True
        elif word == b"session-lost":
            probe.session_ok = lambda: False
        elif word == b"force":
            server.force_exit = True
        elif word == b"stop":
            server.should_exit = True
        elif not word:  # the supervisor is gone: stop serving an unregistered instance
            probe.draining = True
            server.should_exit = True
            return


def main() -> None:
    """Entry point of ``python -m keel.service._worker FD``."""
    # Ctrl-C reaches the whole process group: only the supervisor decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        sys.exit(asyncio.run(_serve(int(sys.argv[1]))))
    sys.exit(uvloop.run(_serve(int(sys.argv[1]))))


if __name__ == "__main__":
    main()

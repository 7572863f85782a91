"""A worker process of a Service: ``python -m keel.service._worker FD``.

Started by :class:`keel.service._workers.WorkerPool`, never by hand: reads its
:class:`~keel.service._workers.WorkerSpec` from the control socket ``FD``,
serves the app on the shared port and obeys the supervisor's control words
(see :mod:`keel.service._workers` for the protocol). Kept out of the package's
imports so ``-m`` runs it fresh.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

from prometheus_client import REGISTRY

from keel.observe import http_metrics
from keel.service._asgi import KeelMiddleware, Probe
from keel.service._server import Server, bind, import_app, server_config
from keel.service._workers import WorkerSpec

__all__ = ["main"]


async def _serve(fd: int) -> int:
    """A worker's life: read its spec, serve the app on the shared port, obey the supervisor."""
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    spec = WorkerSpec(**json.loads(await reader.readline()))
    sys.path[:] = spec.sys_path
    try:
        app = import_app(spec.app)
    except Exception as exc:
        writer.write(f"failed {exc}\n".replace("\n", " ").strip().encode() + b"\n")
        await writer.drain()
        return 1
    probe = Probe()
    server = Server(
        server_config(
            KeelMiddleware(
                app, service=spec.service, probe=probe, metrics=http_metrics(), registry=REGISTRY
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
    following = asyncio.ensure_future(_follow(reader, server, probe))
    await serving
    following.cancel()
    writer.close()
    return 0


async def _follow(reader: asyncio.StreamReader, server: Server, probe: Probe) -> None:
    """Apply the supervisor's control words until it hangs up."""
    while True:
        word = (await reader.readline()).strip()
        if word == b"draining":
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

"""A real ``redis-server`` on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from typing import Self

from keel.testing._ports import free_port, wait_for_port
from keel.testing._process import Launcher, end_process, running

__all__ = ["RedisServer"]


class RedisServer(Launcher):
    """One redis-server process (no persistence) in a temporary directory.

    Args:
        binary: the redis-server executable.
        port: the port to listen on (default: a free one).
    """

    def __init__(self, *, binary: str = "redis-server", port: int | None = None) -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError(
                "redis-server is not installed: run 'make test' (it installs Debian's "
                "redis-server) or 'apt-get install redis-server'"
            )
        self._binary = path
        self.port = port or free_port()
        self._tmp = tempfile.mkdtemp(prefix="keel-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:port/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> Self:
        """Start the server and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._tmp,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_for_port("127.0.0.1", self.port, timeout_s):
            self.stop()
            raise RuntimeError(f"redis-server did not listen on port {self.port}")
        return self

    def pause(self) -> None:
        """``SIGSTOP`` the server."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """``SIGCONT`` the server."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """``kill -9`` the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        if running(self.process):
            self.resume()
        end_process(self.process, 5)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __repr__(self) -> str:
        alive = running(self.process)
        return f"<RedisServer port={self.port} {'running' if alive else 'stopped'}>"

"""A real PostgreSQL server on a free loopback port, for tests and benchmarks.

Debian's ``postgresql`` package puts ``initdb`` and ``postgres`` under
``/usr/lib/postgresql/<major>/bin`` (not on ``PATH``); the newest major found
there is used. PostgreSQL refuses to run as root, so as root the server runs as
the ``postgres`` user (made by the package) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Self

from keel.testing._ports import free_port, wait_for_port
from keel.testing._process import Launcher, end_process, running

__all__ = ["PostgresServer", "postgres_bindir"]

_NOT_INSTALLED = (
    "PostgreSQL is not installed: run 'make test' (it installs Debian's postgresql) "
    "or 'apt-get install postgresql'"
)


def postgres_bindir() -> str | None:
    """The directory holding ``initdb`` and ``postgres`` (newest major), or None."""
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{d}/initdb")]
    if found:
        return max(found, key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PostgresServer(Launcher):
    """One ``postgres`` process with a fresh cluster in a temporary directory.

    The cluster trusts local connections (user ``keel``, database ``postgres``)
    and runs with ``fsync=off``: tests kill clients, not the server.

    Args:
        port: the port to listen on (default: a free one).
        user: the OS user to run as when started by root (PostgreSQL refuses root).
    """

    def __init__(self, *, port: int | None = None, user: str = "postgres") -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError(_NOT_INSTALLED)
        self._bindir = bindir
        self.port = port or free_port()
        self._user = user
        self._tmp = tempfile.mkdtemp(prefix="keel-pg-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``postgresql://keel@127.0.0.1:port/postgres``."""
        return f"postgresql://keel@127.0.0.1:{self.port}/postgres"

    def _as_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", self._user, "--", *argv]

    def start(self, timeout_s: float = 30.0) -> Self:
        """Create the cluster, start the server, wait until it accepts connections."""
        data = os.path.join(self._tmp, "data")
        if os.geteuid() == 0:
            shutil.chown(self._tmp, user=self._user)
        initdb = [f"{self._bindir}/initdb", "-D", data, "-U", "keel", "--auth=trust"]
        subprocess.run(
            self._as_user([*initdb, "-E", "UTF8", "--no-sync", "--locale=C"]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": self._tmp,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        argv = [f"{self._bindir}/postgres", "-D", data]
        for name, value in options.items():
            argv += ["-c", f"{name}={value}"]
        self.process = subprocess.Popen(
            self._as_user(argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not (wait_for_port("127.0.0.1", self.port, timeout_s) and self._ready(timeout_s)):
            self.stop()
            raise RuntimeError(f"postgres did not accept connections on port {self.port}")
        return self

    def _ready(self, timeout_s: float) -> bool:
        # The port opens before recovery ends ("the database system is starting up").
        deadline = time.monotonic() + timeout_s
        probe = [f"{self._bindir}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while time.monotonic() < deadline:
            if subprocess.run([*probe, "-U", "keel"], check=False).returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        """``kill -9`` the server."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        # SIGINT is postgres's "fast" shutdown; runuser forwards it to the server.
        end_process(self.process, 10, group_signal=signal.SIGINT)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __repr__(self) -> str:
        alive = running(self.process)
        return f"<PostgresServer port={self.port} {'running' if alive else 'stopped'}>"

"""A real Redis Cluster (3 masters, no replicas) on loopback, for tests and benchmarks.

Each master is a ``redis-server --cluster-enabled yes`` in its own temporary
directory; ``redis-cli --cluster create`` then splits the 16,384 hash slots
between them, and :meth:`RedisCluster.start` returns once every node reports
``cluster_state:ok``. A node's cluster bus listens on its port + 10,000, so
ports are picked where both are free.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from keel.testing._ports import wait_for_port
from keel.testing._process import Launcher, end_process

__all__ = ["RedisCluster"]

BUS_OFFSET = 10_000
"""Redis Cluster's node-to-node bus listens on the client port + 10,000."""


class RedisCluster(Launcher):
    """``size`` Redis Cluster masters on free loopback ports (no persistence, no replicas).

    Args:
        size: number of masters (3 at least: ``redis-cli --cluster create`` needs them).
        binary: the redis-server executable.
    """

    def __init__(self, size: int = 3, *, binary: str = "redis-server") -> None:
        server, cli = shutil.which(binary), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError(
                "redis-server is not installed: run 'make test' (it installs Debian's "
                "redis-server) or 'apt-get install redis-server'"
            )
        if size < 3:
            raise ValueError(f"size={size} is too small: a Redis Cluster needs 3 masters")
        self._server = server
        self._cli = cli
        self._tmp = Path(tempfile.mkdtemp(prefix="keel-redis-cluster-"))
        self.ports = _cluster_ports(size)
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...``."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start the masters, create the cluster and wait for ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout_s
        try:
            for port in self.ports:
                self.processes.append(self._spawn(port))
            for port in self.ports:
                if not wait_for_port("127.0.0.1", port, max(0.1, deadline - time.monotonic())):
                    raise RuntimeError(f"redis-server did not listen on port {port}")
            self._create(deadline)
            self._wait_ok(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        node_dir = self._tmp / str(port)
        node_dir.mkdir()
        return subprocess.Popen(
            [
                self._server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node_dir / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(node_dir),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _create(self, deadline: float) -> None:
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        done = subprocess.run(
            [self._cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).decode(errors="replace")[-500:]
            raise RuntimeError(f"redis-cli --cluster create failed: {tail}")

    def _wait_ok(self, deadline: float) -> None:
        pending = list(self.ports)
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster nodes {pending} never reported cluster_state:ok")
            port = pending[0]
            info = subprocess.run(
                [self._cli, "-p", str(port), "cluster", "info"],
                capture_output=True,
                timeout=5,
                check=False,
            ).stdout
            if b"cluster_state:ok" in info:
                pending.pop(0)
            else:
                time.sleep(0.05)

    def kill(self, index: int) -> None:
        """``kill -9`` master number ``index``."""
        process = self.processes[index]
        if process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop every master and delete their directories."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()  # all asked first: they stop in parallel
        for process in self.processes:
            end_process(process, 5)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __repr__(self) -> str:
        alive = sum(1 for p in self.processes if p.poll() is None)
        return f"<RedisCluster ports={self.ports} running={alive}/{len(self.ports)}>"


def _cluster_ports(size: int) -> list[int]:
    """``size`` ports in 20000-45000 whose port and port + 10,000 are both free now."""
    rng = random.Random()
    ports: list[int] = []
    for _ in range(1000):
        port = rng.randrange(20_000, 45_000)
        if port in ports or port + BUS_OFFSET in ports:
            continue
        if _free(port) and _free(port + BUS_OFFSET):
            ports.append(port)
            if len(ports) == size:
                return ports
    raise RuntimeError("found no free loopback ports for a redis cluster")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

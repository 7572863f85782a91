"""Real etcd processes on free loopback ports, for tests and benchmarks.

Uses the ``etcd`` binary from Debian's ``etcd-server`` package (``make test``
installs it). Members run with a 50 ms heartbeat and a 500 ms election
timeout so failover tests are quick.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from keel.testing._ports import free_port, wait_for_port
from keel.testing._process import Launcher, end_process

__all__ = ["EtcdCluster", "EtcdTLS"]


@dataclass(frozen=True, slots=True)
class EtcdTLS:
    """Server-side TLS files for :class:`EtcdCluster`.

    Attributes:
        cert_file: the server certificate (valid for 127.0.0.1 / localhost).
        key_file: its private key.
        ca_file: the CA that client certificates must chain to; None to not
            require client certificates.
    """

    cert_file: str
    key_file: str
    ca_file: str | None = None


@dataclass(slots=True)
class _Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None


class EtcdCluster(Launcher):
    """One or more etcd members on loopback, started in a temporary directory.

    Args:
        size: number of members.
        tls: serve clients over TLS with these files.
        binary: the etcd executable.
        extra_args: more etcd flags for every member (e.g. ``--auth-token-ttl=1``).
    """

    def __init__(
        self,
        size: int = 1,
        *,
        tls: EtcdTLS | None = None,
        binary: str = "etcd",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError(
                "etcd is not installed: run 'make test' (it installs Debian's etcd-server) "
                "or 'apt-get install etcd-server'"
            )
        self._binary = path
        self._tls = tls
        self._extra_args = extra_args
        self._admin: str | None = None
        self._tmp = tempfile.mkdtemp(prefix="keel-etcd-")
        self.members = [
            _Member(f"m{i}", free_port(), free_port(), Path(self._tmp) / f"m{i}")
            for i in range(size)
        ]

    @property
    def scheme(self) -> str:
        """``https`` when serving TLS, else ``http``."""
        return "https" if self._tls else "http"

    @property
    def endpoints(self) -> list[str]:
        """``127.0.0.1:port`` of every member's client listener."""
        return [f"127.0.0.1:{m.client_port}" for m in self.members]

    @property
    def url(self) -> str:
        """A keel store URL naming every member (``etcd://h:p,h:p``)."""
        return "etcd://" + ",".join(self.endpoints)

    def _command(self, member: _Member, state: str) -> list[str]:
        peers = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        client = f"{self.scheme}://127.0.0.1:{member.client_port}"
        cmd = [
            self._binary,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls=http://127.0.0.1:{member.peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{member.peer_port}",
            f"--initial-cluster={peers}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=keel-test",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-level=error",
            "--quota-backend-bytes=1073741824",
            *self._extra_args,
        ]
        if self._tls:
            cmd += [f"--cert-file={self._tls.cert_file}", f"--key-file={self._tls.key_file}"]
            if self._tls.ca_file:
                cmd += ["--client-cert-auth", f"--trusted-ca-file={self._tls.ca_file}"]
        return cmd

    def _spawn(self, member: _Member, state: str) -> None:
        log = open(Path(self._tmp) / f"{member.name}.log", "ab")  # noqa: SIM115 - child owns it
        member.process = subprocess.Popen(
            self._command(member, state),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def start(self, timeout_s: float = 20.0) -> Self:
        """Start every member and wait until the cluster is healthy."""
        for member in self.members:
            self._spawn(member, "new")
        self.wait_healthy(timeout_s)
        return self

    def wait_healthy(self, timeout_s: float = 20.0, members: list[int] | None = None) -> None:
        """Wait until the given members (default: all running) answer /health with true."""
        deadline = time.monotonic() + timeout_s
        wanted = (
            members
            if members is not None
            else [i for i, m in enumerate(self.members) if self.running(i)]
        )
        for i in wanted:
            member = self.members[i]
            if not wait_for_port("127.0.0.1", member.client_port, deadline - time.monotonic()):
                raise RuntimeError(f"etcd member {member.name} did not listen: {self.log(i)}")
            while not self._healthy(member):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd member {member.name} not healthy: {self.log(i)}")
                time.sleep(0.05)

    def _healthy(self, member: _Member) -> bool:
        if self._tls:
            return self._tls_handshake(member)
        try:
            url = f"http://127.0.0.1:{member.client_port}/health"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return b'"true"' in resp.read()
        except (OSError, ssl.SSLError):
            return False

    @staticmethod
    def _tls_handshake(member: _Member) -> bool:
        """Whether the member completes a TLS handshake (it then serves clients).

        /health over mutual TLS would need a client certificate; a completed
        handshake is enough to know the listener is up.
        """
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection(("127.0.0.1", member.client_port), timeout=1) as raw,
                context.wrap_socket(raw) as tls,
            ):
                tls.do_handshake()
                return True
        except (OSError, ssl.SSLError):
            return False

    def log(self, index: int) -> str:
        """The tail of a member's log, for error messages."""
        path = Path(self._tmp) / f"{self.members[index].name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def running(self, index: int) -> bool:
        """Whether member ``index`` has a live process."""
        proc = self.members[index].process
        return proc is not None and proc.poll() is None

    def kill(self, index: int) -> None:
        """``kill -9`` member ``index``."""
        proc = self.members[index].process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def restart(self, index: int, timeout_s: float = 20.0) -> None:
        """Start member ``index`` again on its data directory."""
        self.kill(index)
        self._spawn(self.members[index], "existing")
        self.wait_healthy(timeout_s, [index])

    def pause(self, index: int) -> None:
        """``SIGSTOP`` member ``index``: it stops answering but keeps its sockets."""
        proc = self.members[index].process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)

    def resume(self, index: int) -> None:
        """``SIGCONT`` member ``index``."""
        proc = self.members[index].process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)

    def etcdctl(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run ``etcdctl`` against the cluster; return its stdout."""
        cmd = ["etcdctl", f"--endpoints={','.join(self.endpoints)}", *args]
        full_env = {**os.environ, "ETCDCTL_API": "3", **(env or {})}
        out = subprocess.run(cmd, check=True, capture_output=True, env=full_env, timeout=30)
        return out.stdout.decode()

    def enable_auth(self, password: str, *, user: str = "root") -> None:
        """Create ``user`` (etcd's ``root`` has every permission) and turn auth on.

        Later :meth:`add_user` calls run etcdctl as this user.
        """
        self.etcdctl("user", "add", user, "--interactive=false", f"--new-user-password={password}")
        if user != "root":
            self.etcdctl("user", "grant-role", user, "root")
        self.etcdctl("auth", "enable")
        self._admin = f"{user}:{password}"

    def add_user(self, user: str, password: str, *, readwrite: tuple[str, ...] = ()) -> None:
        """Create a least-privilege ``user``: one role of its own, readwrite on each prefix.

        The same commands an operator runs (``etcdctl role grant-permission
        ROLE --prefix=true readwrite /keel/``); with no prefix the user may
        authenticate but read or write nothing.
        """
        admin = {"ETCDCTL_USER": self._admin} if self._admin else None
        role = f"{user}-role"
        self.etcdctl("role", "add", role, env=admin)
        for prefix in readwrite:
            self.etcdctl(
                "role", "grant-permission", role, "--prefix=true", "readwrite", prefix, env=admin
            )
        self.etcdctl(
            "user", "add", user, "--interactive=false", f"--new-user-password={password}", env=admin
        )
        self.etcdctl("user", "grant-role", user, role, env=admin)

    def stop(self) -> None:
        """Stop every member and delete the data directory."""
        for i, member in enumerate(self.members):
            if member.process is not None:
                self.resume(i)
                end_process(member.process, 5)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __repr__(self) -> str:
        alive = sum(self.running(i) for i in range(len(self.members)))
        return f"<EtcdCluster {self.url} members={len(self.members)} running={alive}>"

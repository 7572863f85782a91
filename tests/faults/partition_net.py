"""Network namespaces for partition tests: hosts on one private bridge, cut with iptables.

Every host (an etcd member, a client process) gets a network namespace of
its own, with one veth to a bridge that lives in a namespace of its own too,
so nothing is added to the machine's own network: the test range
(10.200.0.0/24) exists only inside namespaces this module created. A
partition is a set of iptables DROP rules inside one host's namespace;
healing flushes them.

Names carry a prefix with the creating process's pid (``kpart<pid>-``), so
:func:`sweep_leftovers` can remove what a crashed earlier run left behind
(its processes killed, its namespaces deleted) without touching a run that
is still going.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Host", "NetEtcd", "NetLab", "missing_tools", "sweep_leftovers"]

TAG = "kpart"
SUBNET = "10.200.0"
_CLIENT_PORT = 2379
_PEER_PORT = 2380


def _run(*cmd: str, check: bool = True) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def missing_tools() -> str | None:
    """Why partition tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables", "etcd", "etcdctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 iptables etcd-server)"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(ns: str) -> None:
    for pid in _run("ip", "netns", "pids", ns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def sweep_leftovers() -> list[str]:
    """Delete the namespaces (and kill the processes in them) of runs that are gone."""
    swept = []
    for line in _run("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        owner = name[len(TAG) :].split("-", 1)[0]
        if not name.startswith(TAG) or not owner.isdigit() or _alive(int(owner)):
            continue
        _kill_inside(name)
        _run("ip", "netns", "del", name, check=False)
        swept.append(name)
    for data in Path(tempfile.gettempdir()).glob(f"{TAG}*-etcd-*"):
        owner = data.name[len(TAG) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(data, ignore_errors=True)
            swept.append(str(data))
    return swept


@dataclass(frozen=True, slots=True)
class Host:
    """One network namespace with one address on the lab's bridge."""

    ns: str
    address: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]


class NetLab:
    """Hosts on one bridge, each in its own namespace; partitions by iptables.

    Use as a context manager: leaving it kills every process still inside
    its namespaces and deletes them, even when the test failed.
    """

    def __init__(self) -> None:
        self.prefix = f"{TAG}{os.getpid()}-"
        self._hub = f"{self.prefix}hub"
        self._made: list[str] = []
        self.hosts: list[Host] = []

    def __enter__(self) -> NetLab:
        sweep_leftovers()
        try:
            self._netns(self._hub)
            _run("ip", "-n", self._hub, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self._hub, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _netns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._made.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Host:
        """A new namespace ``name`` with the next address of the test range."""
        index = len(self.hosts)
        host = Host(ns=f"{self.prefix}{name}", address=f"{SUBNET}.{10 + index}")
        self._netns(host.ns)
        port = f"v{index}"
        _run(
            "ip", "link", "add", "eth0", "netns", host.ns,
            "type", "veth", "peer", "name", port, "netns", self._hub,
        )  # fmt: skip
        _run("ip", "-n", host.ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _run("ip", "-n", host.ns, "link", "set", "eth0", "up")
        _run("ip", "-n", self._hub, "link", "set", port, "master", "br0", "up")
        self.hosts.append(host)
        return host

    def cut(self, host: Host, peers: list[Host] | None = None) -> None:
        """Drop every packet between ``host`` and ``peers`` (everyone when None)."""
        if peers is None:
            rules = [["-A", "INPUT", "-i", "eth0"], ["-A", "OUTPUT", "-o", "eth0"]]
        else:
            rules = []
            for peer in peers:
                rules += [["-A", "INPUT", "-s", peer.address], ["-A", "OUTPUT", "-d", peer.address]]
        for rule in rules:
            _run(*host.command("iptables", *rule, "-j", "DROP"))

    def heal(self, host: Host) -> None:
        """Remove every rule :meth:`cut` put in ``host``."""
        _run(*host.command("iptables", "-F"))

    def close(self) -> None:
        """Kill the processes inside the lab's namespaces and delete them."""
        for name in reversed(self._made):
            _kill_inside(name)
        deadline = time.monotonic() + 5
        while any(_run("ip", "netns", "pids", n, check=False).split() for n in self._made):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for name in reversed(self._made):
            _run("ip", "netns", "del", name, check=False)
        self._made.clear()


class NetEtcd:
    """An etcd cluster with each member on its own host of a :class:`NetLab`."""

    def __init__(self, lab: NetLab, size: int = 3) -> None:
        self.lab = lab
        self.members = [lab.add_host(f"e{i}") for i in range(size)]
        self._dir = Path(tempfile.mkdtemp(prefix=f"{lab.prefix}etcd-"))
        self._procs: list[subprocess.Popen[bytes]] = []

    def endpoint(self, index: int) -> str:
        """``host:port`` of member ``index``."""
        return f"{self.members[index].address}:{_CLIENT_PORT}"

    def url(self, *order: int, timeout_s: float = 2.0) -> str:
        """A store URL listing the members in ``order`` (all of them by default)."""
        indexes = order or tuple(range(len(self.members)))
        hosts = ",".join(self.endpoint(i) for i in indexes)
        return f"etcd://{hosts}?timeout_s={timeout_s:g}"

    def _command(self, index: int) -> list[str]:
        host = self.members[index]
        peers = ",".join(
            f"e{i}=http://{m.address}:{_PEER_PORT}" for i, m in enumerate(self.members)
        )
        client = f"http://{host.address}:{_CLIENT_PORT}"
        return host.command(
            "etcd",
            f"--name=e{index}",
            f"--data-dir={self._dir / f'e{index}'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls=http://{host.address}:{_PEER_PORT}",
            f"--initial-advertise-peer-urls=http://{host.address}:{_PEER_PORT}",
            f"--initial-cluster={peers}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=keel-partition",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-level=error",
        )

    def start(self, timeout_s: float = 20.0) -> NetEtcd:
        """Start every member and wait until each one is healthy."""
        for index in range(len(self.members)):
            log = (self._dir / f"e{index}.log").open("wb")
            self._procs.append(
                subprocess.Popen(self._command(index), stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()
        deadline = time.monotonic() + timeout_s
        for index in range(len(self.members)):
            while not self.healthy(index):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd member e{index} not healthy: {self.log(index)}")
                time.sleep(0.1)
        return self

    def healthy(self, index: int) -> bool:
        """Whether member ``index`` commits a proposal (asked from its own namespace)."""
        cmd = self.members[index].command(
            "etcdctl", f"--endpoints={self.endpoint(index)}",
            "--command-timeout=1s", "endpoint", "health",
        )  # fmt: skip
        return subprocess.run(cmd, capture_output=True, timeout=10, check=False).returncode == 0

    def log(self, index: int) -> str:
        """The tail of member ``index``'s log."""
        path = self._dir / f"e{index}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        """Kill every member and remove the data."""
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._procs.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

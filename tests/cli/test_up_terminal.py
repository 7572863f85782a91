"""``keel up`` as a user runs it: under a pseudo-terminal of a given size, and piped."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.cli._cli import KEEL, keel_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FRAME_START = "\x1b[2K"  # rich's Live erases the lines of the last frame before each new one


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    pytest.fail("no free run of ports")


def _read_until(fd: int, deadline: float, done: str | None = None) -> bytes:
    """Read the terminal until ``deadline``, or until ``done`` (a regex) shows in a frame."""
    out = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if done is not None and re.search(
            done, "\n".join(last_frame(out.decode(errors="replace")))
        ):
            break
    return out


def run_in_terminal(
    args: list[str], cols: int, rows: int, *, cwd: Path, until: str, seconds: float = 60
) -> tuple[str, int]:
    """Run keel under a pty of ``cols`` x ``rows`` until a frame matches ``until``, then SIGTERM it.

    Gives up waiting after ``seconds`` (the assertions then say what was missing).
    """
    env = {**keel_env(), "TERM": "xterm-256color"}
    for name in ("COLUMNS", "LINES", "NO_COLOR"):
        env.pop(name, None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: keel on the terminal
        os.chdir(cwd)
        os.execve(KEEL, [KEEL, *args], env)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        out = _read_until(fd, time.monotonic() + seconds, done=until)
        os.kill(pid, signal.SIGTERM)
        out += _read_until(fd, time.monotonic() + 40, done="^$a")  # to the end: EOF
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return out.decode("utf-8", "replace"), os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        pytest.fail("keel up did not stop within 60 s of SIGTERM")
    finally:
        with_child_gone(pid)
        os.close(fd)


def with_child_gone(pid: int) -> None:
    """Kill the child if it is still there (a failed test must not leave it running)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def last_frame(out: str) -> list[str]:
    """The lines of the last screen the live view drew, control sequences removed."""
    frame = out.rsplit(_FRAME_START, 1)[-1].split("keel up: stopped cleanly")[0]
    return _CONTROL.sub("", frame).replace("\r", "").splitlines()


@pytest.mark.parametrize(("cols", "rows"), [(80, 24), (200, 60)])
def test_live_view_fits_the_terminal(tmp_path: Path, cols: int, rows: int) -> None:
    """Under a cols x rows terminal the services, jobs and locks panels show, within the screen."""
    url = f"sqlite:///{tmp_path / 'up.db'}"
    port = free_ports(6)
    args = ["--store", url, "up", "--shop-port", str(port), "--console-port", "0"]
    shop_up = rf"(?s)(?=.*shop http://127.0.0.1:{port} \(up\))(?=.*\norders\s+http)(?=.*every 5 s)"
    out, code = run_in_terminal(args, cols, rows, cwd=REPO, until=shop_up)
    assert code == 0, out[-2000:]
    frame = last_frame(out)
    shown = "\n".join(frame)
    assert len(frame) <= rows + 1, shown  # the frame, and the newline that ends it
    assert all(len(line.rstrip()) <= cols for line in frame), shown
    for title in ("services ·", "jobs · 1 job", "locks and leaders ·", "recent changes"):
        assert title in shown, shown
    assert f"shop http://127.0.0.1:{port} (up)" in shown, shown
    assert f"localhost:{port}/orders" in shown, shown
    assert re.search(r"^gateway\s+http://127\.0\.0\.1:" + str(port), shown, re.M), shown
    assert re.search(r"^orders\s+http://127\.0\.0\.1:" + str(port + 1), shown, re.M), shown
    if rows >= 30:  # the edges: the gateway's routes and the console's address
        assert "gateway POST /orders → orders" in shown, shown
        assert re.search(r"console http://127\.0\.0\.1:\d+", shown), shown
    assert "election  keel/up" in shown.replace("   ", "  ") or "keel/up" in shown, shown
    assert re.search(r"\n\r?\n?keel up: stopped cleanly", _CONTROL.sub("", out)), out[-500:]


def test_a_port_in_use_shows_in_the_view(tmp_path: Path) -> None:
    """With the shop's port taken, the view says so and how to fix it (not /dev/null)."""
    url = f"sqlite:///{tmp_path / 'up.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--store", url, "up", "--shop-port", str(port), "--console-port", "0"]
        out, code = run_in_terminal(args, 80, 24, cwd=REPO, until=r"is in use(?s:.*)jobs ·")
    assert code == 0, out[-2000:]
    shown = "\n".join(last_frame(out))
    assert f"shop http://127.0.0.1:{port} (not started)" in shown, shown
    assert f"! shop not started: port {port} is in use" in shown, shown
    assert "services ·" in shown and "jobs ·" in shown, shown


def test_without_a_terminal_it_prints_status_lines(tmp_path: Path) -> None:
    """Piped, keel up prints one time-stamped line per change, then stops by itself."""
    url = f"sqlite:///{tmp_path / 'up.db'}"
    proc = subprocess.run(
        [KEEL, "--store", url, "up", "--duration", "4", "--console-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # no examples/shop here: no shop
        env=keel_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(f"store sqlite:///{tmp_path / 'up.db'}"), lines
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines[:-1]), lines
    text = proc.stdout
    assert "election keel/up: held by" in text and "job demo.heartbeat:" in text, text
    assert "lock demo/heartbeat: free" in text, text
    assert lines[-1] == "keel up: stopped cleanly", lines
    assert "\x1b[" not in text


def test_once_prints_every_panel_unclipped(tmp_path: Path) -> None:
    """keel up --once, piped, prints one snapshot with every panel and the legend."""
    url = f"sqlite:///{tmp_path / 'up.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "--store", url, "up", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=keel_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for title in (
        "services ·",
        "jobs ·",
        "configs",
        "leases",
        "keys by area",
        "token: the fencing",
    ):
        assert title in proc.stdout, proc.stdout

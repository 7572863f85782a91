"""The example shop ``keel up`` runs beside the store, watched rather than silenced.

``keel up`` starts ``python -m examples.shop`` (when the working directory has
it, as under ``make up``) with its gateway on the shop port and the services
on the next five. What goes wrong shows up in the view, not in ``/dev/null``:
a port already in use (checked before starting, with the fix), a crash (its
exit code and last line of output), error lines it prints, and responses with
5xx statuses. Request rates per service come from the shop's ``/metrics``
(``keel_http_server_requests_total``), read every few seconds with one small
HTTP/1.0 request: cheap, bounded (a fixed number of samples per service), and
with no client library to import.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path

__all__ = ["SHOP_PORTS", "ShopWatch", "port_in_use"]

SHOP_PORTS = 6
"""gateway, orders, inventory x2, payment, users (gRPC): the shop port and the next five."""
_SAMPLES = 30
_SCRAPE_EVERY_S = 2.0
_MAX_METRICS_BYTES = 1 << 20
_PROBLEMS = 4
_SAMPLE_RE = re.compile(r"^keel_http_server_requests_total\{([^}]*)\}\s+([0-9.eE+]+)\s*$")
_LABEL_RE = re.compile(r'(\w+)="([^"]*)"')
_ERROR_WORDS = ("Traceback", "Error", "ERROR", "CRITICAL", "address already in use")


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (so the shop could not bind it)."""
    with socket.socket() as sock:
        # as servers do: a port whose last connections linger in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class ShopWatch:
    """The shop's state as the view shows it: where it is, its problems, its request rates."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.state = "off"
        self.problems: deque[str] = deque(maxlen=_PROBLEMS)
        self.output: deque[str] = deque(maxlen=20)
        self.rates: dict[str, deque[float]] = {}
        self.error_rates: dict[str, deque[float]] = {}
        self.errors_5xx = 0
        self._last: tuple[float, dict[str, float], dict[str, float]] | None = None

    @property
    def url(self) -> str:
        """The shop's gateway, its front door."""
        return f"http://{self.host}:{self.port}"

    def try_line(self) -> str:
        """The command to try once the shop is up (short enough for 80 columns)."""
        body = '{"sku":"apple","qty":2,"user":"bob"}'
        return f"curl -sX POST localhost:{self.port}/orders -d '{body}'"

    def problem(self, text: str) -> None:
        """Record a problem for the view (the newest few are kept)."""
        self.problems.append(text)

    async def run(self, store_url: str) -> None:
        """Run the shop until cancelled; record why it could not start or why it stopped."""
        if store_url.startswith("memory:") or not (Path.cwd() / "examples" / "shop").is_dir():
            return
        busy = [p for p in range(self.port, self.port + SHOP_PORTS) if port_in_use(self.host, p)]
        if busy:
            self.state = "not started"
            self.problem(
                f"shop not started: port {busy[0]} is in use: stop what listens there "
                f"(ss -ltnp 'sport = :{busy[0]}') or run keel up --shop-port PORT"
            )
            return
        self.state = "starting"
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "examples.shop", "--store", store_url),
            *("--base-port", str(self.port)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read(proc))
                scraper = tasks.create_task(self._scrape_forever())
                code = await proc.wait()
                scraper.cancel()
            last = next((line for line in reversed(self.output) if line.strip()), "no output")
            self.state = f"exited ({code})"
            self.problem(f"shop exited with code {code}: {last}")
        finally:
            await _stop(proc)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode("utf-8", "backslashreplace").rstrip()[:300]
            self.output.append(text)
            if text.startswith("try:"):
                self.state = "up"
            elif any(word in text for word in _ERROR_WORDS):
                self.problem(f"shop: {text}")

    async def _scrape_forever(self) -> None:
        while True:
            await asyncio.sleep(_SCRAPE_EVERY_S)
            if self.state == "up":
                with contextlib.suppress(OSError, TimeoutError, ValueError):
                    async with asyncio.timeout(1.5):
                        self.fold(await _get_metrics(self.host, self.port), time.monotonic())

    def fold(self, text: str, now: float) -> None:
        """Fold one ``/metrics`` scrape into the rates and the 5xx count."""
        totals: dict[str, float] = {}
        failed: dict[str, float] = {}
        for line in text.splitlines():
            match = _SAMPLE_RE.match(line)
            if match is None:
                continue
            labels = dict(_LABEL_RE.findall(match[1]))
            value = float(match[2])
            service = labels.get("service", "?")
            totals[service] = totals.get(service, 0.0) + value
            if labels.get("status", "").startswith("5"):
                failed[service] = failed.get(service, 0.0) + value
        errors = sum(failed.values())
        if self._last is not None:
            then, before, failed_before = self._last
            elapsed = max(now - then, 1e-3)
            for service, total in totals.items():
                rate = max(0.0, total - before.get(service, 0.0)) / elapsed
                self.rates.setdefault(service, deque(maxlen=_SAMPLES)).append(rate)
                bad = failed.get(service, 0.0) - failed_before.get(service, 0.0)
                series = self.error_rates.setdefault(service, deque(maxlen=_SAMPLES))
                series.append(max(0.0, bad) / elapsed)
        if int(errors) > self.errors_5xx:
            self.problem(
                f"shop answered {int(errors) - self.errors_5xx} more 5xx: see its /metrics"
            )
        self.errors_5xx = int(errors)
        self._last = (now, totals, failed)


async def _get_metrics(host: str, port: int) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        body = b""
        while len(body) < _MAX_METRICS_BYTES and (chunk := await reader.read(65536)):
            body += chunk
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return body.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(15):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()

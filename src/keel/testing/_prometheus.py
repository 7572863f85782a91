"""A real Prometheus server (Debian's ``prometheus``) on a free loopback port, for tests.

It scrapes the targets a test gives it (every ``scrape_interval_s``, default
one second, so rates move within a few seconds); :meth:`set_targets` rewrites
the configuration and reloads it with ``SIGHUP``, so one server can serve a
whole test session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from keel.testing._ports import free_port, wait_for_port
from keel.testing._process import Launcher, end_process, running

__all__ = ["PrometheusServer"]


class PrometheusServer(Launcher):
    """One prometheus process with its TSDB in a temporary directory.

    Args:
        binary: the prometheus executable.
        port: the port to listen on (default: a free one).
        scrape_interval_s: how often targets are scraped.
    """

    def __init__(
        self, *, binary: str = "prometheus", port: int | None = None, scrape_interval_s: float = 1.0
    ) -> None:
        path = shutil.which(binary) or shutil.which("/usr/bin/prometheus")
        if path is None:
            raise RuntimeError(
                "prometheus is not installed: run 'make test' (it installs Debian's "
                "prometheus) or 'apt-get install prometheus'"
            )
        self._binary = path
        self.port = port or free_port()
        self.scrape_interval_s = scrape_interval_s
        self._tmp = Path(tempfile.mkdtemp(prefix="keel-prometheus-"))
        self._config = self._tmp / "prometheus.yml"
        self.targets: tuple[str, ...] = ()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        interval = f"{max(1, round(self.scrape_interval_s * 1000))}ms"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {"job_name": "test", "static_configs": [{"targets": list(self.targets)}]}
            ],
        }
        self._config.write_text(json.dumps(config))  # JSON is YAML

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start the server and wait until it is ready."""
        self._write_config()
        self.process = subprocess.Popen(
            [
                self._binary,
                f"--config.file={self._config}",
                f"--storage.tsdb.path={self._tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_for_port("127.0.0.1", self.port, timeout_s) or not self._ready(timeout_s):
            self.stop()
            raise RuntimeError(f"prometheus did not get ready on port {self.port}")
        return self

    def _ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def set_targets(self, targets: Sequence[str], timeout_s: float = 15.0) -> None:
        """Scrape exactly ``targets`` (``host:port``); return once Prometheus knows them all."""
        self.targets = tuple(targets)
        self._write_config()
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            known = {t["labels"].get("instance") for t in self._active_targets()}
            if set(self.targets) <= known:
                return
            time.sleep(0.1)
        raise RuntimeError(f"prometheus did not pick up targets {self.targets}")

    def _active_targets(self) -> list[dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=2) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return []
        targets = body.get("data", {}).get("activeTargets", [])
        return targets if isinstance(targets, list) else []

    def query(self, promql: str) -> Any:
        """The ``data`` of an instant query (for test assertions)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        end_process(self.process, 10)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __repr__(self) -> str:
        alive = running(self.process)
        return f"<PrometheusServer port={self.port} {'running' if alive else 'stopped'}>"

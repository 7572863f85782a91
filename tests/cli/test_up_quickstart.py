"""The quickstart runs as written: examples/quickstart.py, which docs/quickstart.md shows."""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli._cli import keel_cli, snapshot

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "examples" / "quickstart.py"
DOC = REPO / "docs" / "quickstart.md"


class Lines:
    """The stdout lines of a child, read with a deadline (never a hang)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.stream = proc.stdout
        os.set_blocking(self.stream.fileno(), False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stream, selectors.EVENT_READ)
        self.seen: list[str] = []
        self._buffer = b""

    def wait_for(self, pattern: str, timeout_s: float = 30) -> re.Match[str]:
        """The first line from now on matching ``pattern``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                line = raw.decode()
                self.seen.append(line)
                if found := re.search(pattern, line):
                    return found
            if self.selector.select(timeout=0.2):
                chunk = self.stream.read(65536)
                if chunk == b"":
                    break
                self._buffer += chunk or b""
        pytest.fail(f"no line matching {pattern!r} within {timeout_s} s; saw {self.seen}")


def test_the_doc_shows_the_program_as_it_is() -> None:
    """docs/quickstart.md shows examples/quickstart.py verbatim, and it is under 60 lines."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks and blocks[0] == PROGRAM.read_text()
    assert len(PROGRAM.read_text().splitlines()) < 60


def test_quickstart_runs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """It registers, calls itself by name under a lock from a job, follows its config, stops."""
    url = f"sqlite:///{tmp_path / 'quick.db'}"
    proc = subprocess.Popen(
        [sys.executable, str(PROGRAM), "--store", url, "--port", "0"],
        stdout=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        lines = Lines(proc)
        ready = lines.wait_for(r"^READY (http://\S+)$")
        listed = keel_cli("instances", "hello", url=url)
        assert ready[1] in listed.out.decode(), listed
        first = lines.wait_for(r"^CALLED hello token (\d+)$")
        later = lines.wait_for(r"^CALLED hello token (\d+)$")
        assert int(later[1]) > int(first[1])  # a new lock owner each time, a higher token
        (tmp_path / "hello.json").write_text(json.dumps({"greeting": "hi"}))
        new = tmp_path / "hello.json"
        published = keel_cli("config", "publish", "hello.json", str(new), url=url)
        assert published.code == 0, published.err_lines
        lines.wait_for(r"^CALLED hi token \d+$")
        proc.send_signal(signal.SIGTERM)
        lines.wait_for(r"^STOPPED$")
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    _, kvs, _ = asyncio.run(snapshot(url))
    assert not [key for key, *_ in kvs if key.startswith("services/hello/")]  # deregistered

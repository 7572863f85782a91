"""Child processes for fault tests: start a module, read its event lines, kill it, reap it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Child:
    """One child process that prints one event per line (``WORD args...``)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def expect(self, word: str, timeout_s: float = 20.0) -> list[str]:
        """Read lines until one starts with ``word``; return its other fields."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"child ended before {word!r}: {self.lines}")
                line = raw.decode().strip()
                self.lines.append(line)
                if line.split()[0] == word:
                    return line.split()[1:]

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    def signal(self, sig: int) -> None:
        """Send a signal (SIGKILL, SIGSTOP, SIGCONT...)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)


class Children:
    """Starts ``python -m MODULE args`` children; kills and reaps them all at close."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    async def start(self, module: str, *args: str, env: dict[str, str] | None = None) -> Child:
        """Start one child in the repository root."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = Child(proc)
        self.started.append(child)
        return child

    async def close(self) -> None:
        """Kill whatever still runs and reap everything (closing the pipes)."""
        for child in self.started:
            if child.proc.returncode is None:
                child.signal(signal.SIGCONT)
                child.signal(signal.SIGKILL)
        for child in self.started:
            async with asyncio.timeout(30):
                await child.proc.communicate()

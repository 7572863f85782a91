"""Child processes for process tests: start a module, talk to it by lines, kill it, reap it.

Every wait is bounded. A child prints one event per line (``WORD fields...``)
and flushes at once; the parent reads them with :meth:`Child.expect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Child:
    """One child process, read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str = "child") -> None:
        self.proc = proc
        self.name = name
        self.lines: list[str] = []

    async def line(self, timeout_s: float = 30.0) -> str:
        """The next stdout line without its newline ('' once the output ended)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            raw = await self.proc.stdout.readline()
        text = raw.decode().rstrip("\n")
        if text:
            self.lines.append(text)
        return text

    async def expect(self, word: str, timeout_s: float = 30.0) -> list[str]:
        """Read lines until one starts with ``word``; return its other fields."""
        async with asyncio.timeout(timeout_s):
            while True:
                text = await self.line(timeout_s)
                if not text:
                    raise AssertionError(f"{self.name} ended before {word!r}: {self.lines}")
                fields = text.split()
                if fields and fields[0] == word:
                    return fields[1:]

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    def signal(self, sig: int) -> None:
        """Send a signal (SIGKILL, SIGSTOP, SIGCONT...); a child already gone is fine."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        """``kill -9`` the child: no clean-up of any kind runs in it."""
        self.signal(signal.SIGKILL)

    async def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the child to exit; return its exit code."""
        async with asyncio.timeout(timeout_s):
            return await self.proc.wait()


class Children:
    """Starts ``python -m MODULE args`` children; kills and reaps them all at close."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    async def start(self, module: str, *args: object, env: dict[str, str] | None = None) -> Child:
        """Start one child in the repository root (so ``tests.…`` modules import)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *map(str, args),
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        name = " ".join([module.rsplit(".", 1)[-1], *map(str, args[:1])])
        child = Child(proc, name)
        self.started.append(child)
        return child

    async def close(self) -> None:
        """Kill whatever still runs (a stopped child is continued first) and reap everything."""
        for child in self.started:
            child.signal(signal.SIGCONT)
            child.kill9()
        for child in self.started:
            async with asyncio.timeout(30):
                await child.proc.communicate()  # reaps it and closes both pipes

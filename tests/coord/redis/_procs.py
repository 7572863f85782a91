"""Child processes for the Redis lock tests: start, talk to by lines, kill; all waits bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

CHILD = str(Path(__file__).with_name("_child.py"))
ROOT = str(Path(__file__).resolve().parents[3])


class Child:
    """One child process running ``_child.py``, read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, role: str) -> None:
        self.proc = proc
        self.role = role
        self.lines: list[str] = []

    async def expect(self, word: str, timeout_s: float = 30.0) -> list[str]:
        """Read lines until one starts with ``word``; return its fields."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                text = (await self.proc.stdout.readline()).decode().rstrip("\n")
                if not text:
                    raise AssertionError(f"{self.role} child ended before {word!r}: {self.lines}")
                self.lines.append(text)
                if text.split()[0] == word:
                    return text.split()

    def send(self, text: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")

    def kill9(self) -> None:
        """``kill -9`` the child: no cleanup of any kind runs in it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    async def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the child to exit; return its exit code."""
        async with asyncio.timeout(timeout_s):
            return await self.proc.wait()


class Children:
    """Starts children and kills whatever is left at teardown."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    async def start(self, role: str, *args: object) -> Child:
        """Start ``_child.py role args...`` with the repository on its path."""
        env = {**os.environ, "PYTHONPATH": ROOT}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            CHILD,
            role,
            *map(str, args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        child = Child(proc, role)
        self.started.append(child)
        return child

    async def close(self) -> None:
        """Kill and reap every child still running."""
        for child in self.started:
            child.kill9()
        for child in self.started:
            async with asyncio.timeout(10):
                await child.proc.communicate()  # reaps it and closes both pipes

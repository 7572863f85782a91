"""Child processes for the SQLite tests: start, talk to by lines, kill; all waits bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CHILD = str(Path(__file__).with_name("_child.py"))


class Child:
    """One child process running ``_child.py``, read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, role: str) -> None:
        self.proc = proc
        self.role = role
        self.lines: list[str] = []

    async def line(self, timeout_s: float = 20.0) -> str:
        """The next stdout line ('' at end of output)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            raw = await self.proc.stdout.readline()
        text = raw.decode().rstrip("\n")
        if text:
            self.lines.append(text)
        return text

    async def expect(self, word: str, timeout_s: float = 20.0) -> list[str]:
        """Read lines until one starts with ``word``; return its fields."""
        async with asyncio.timeout(timeout_s):
            while True:
                text = await self.line(timeout_s)
                if not text:
                    raise AssertionError(f"{self.role} child ended before {word!r}: {self.lines}")
                fields = text.split()
                if fields[0] == word:
                    return fields

    def send(self, text: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")

    def kill9(self) -> None:
        """``kill -9`` the child (no cleanup runs in it)."""
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    async def wait(self, timeout_s: float = 20.0) -> int:
        """Wait for the child to exit; return its exit code."""
        async with asyncio.timeout(timeout_s):
            return await self.proc.wait()


class Children:
    """Starts children and kills whatever is left at teardown."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    async def start(self, role: str, *args: object) -> Child:
        """Start ``_child.py role args...``."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            CHILD,
            role,
            *map(str, args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
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


@pytest.fixture
async def children() -> AsyncIterator[Children]:
    """Child processes of one test, killed at teardown."""
    spawned = Children()
    try:
        yield spawned
    finally:
        await spawned.close()


def check_file(path: Path) -> tuple[int, list[int]]:
    """Run ``PRAGMA integrity_check`` and return (revision, distinct event revisions)."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        revision = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
        revs = [r for (r,) in conn.execute("SELECT DISTINCT rev FROM events ORDER BY rev")]
    finally:
        conn.close()
    return int(revision), revs

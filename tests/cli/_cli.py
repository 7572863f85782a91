"""Run the installed ``keel`` script as a real process, and look at a store from outside."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import keel

KEEL = str(Path(sys.executable).with_name("keel"))
Arg = str | bytes


def keel_env() -> dict[str, str]:
    """The environment of a keel child: wide, colourless, no KEEL_STORE of ours."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("KEEL_STORE", None)
    env.pop("KEEL_DEBUG", None)
    return env


@dataclass(frozen=True)
class Result:
    """A finished keel process: exit code and raw output."""

    code: int
    out: bytes
    err: bytes

    @property
    def err_lines(self) -> list[str]:
        """The non-empty lines of stderr."""
        return [line for line in self.err.decode(errors="replace").splitlines() if line.strip()]


def keel_cli(
    *args: Arg,
    url: str | None = None,
    stdin: bytes = b"",
    timeout_s: float = 60,
    env: dict[str, str] | None = None,
) -> Result:
    """Run ``keel [--store URL] args...``; bytes arguments go to argv as they are.

    ``env`` adds to (or overrides) the child's environment.
    """
    argv: list[Arg] = [KEEL, *(["--store", url] if url else []), *args]
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        timeout=timeout_s,
        env={**keel_env(), **(env or {})},
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


async def snapshot(url: str) -> tuple[int, list[tuple[str, bytes, int, int]], list[int]]:
    """The store's revision, every key (with value, version, lease) and its leases."""
    async with keel.connect(url) as store:
        kvs, revision = await store.range("")
        leases = sorted(await store.leases())
    return revision, [(kv.key, kv.value, kv.version, kv.lease) for kv in kvs], leases

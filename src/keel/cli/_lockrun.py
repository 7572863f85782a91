"""Running a command under a lock for ``keel lock NAME -- CMD`` (imported when it runs).

The command runs through a guard process (:mod:`._lockguard`) so that it,
and everything it starts in its process group, is gone before another holder
can run: when keel is killed (even ``kill -9``), when the lock is lost, and
when the command exits leaving children behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from keel.cli._common import EXIT_LOCK_LOST, EXIT_TIMED_OUT, err_console, fail, printable

if TYPE_CHECKING:
    from keel.coord import LossFlag
    from keel.store import Store

__all__ = ["run_locked"]

_GUARD = str(Path(__file__).with_name("_lockguard.py"))
_GRACE_S = 5.0


async def _start_guarded(
    command: list[str], env: dict[str, str], grace_s: float
) -> asyncio.subprocess.Process:
    """Start the command under the guard; from this (the main) thread, for PDEATHSIG.

    The guard has a process group of its own, so a signal to keel's group
    (``kill -9 -PGID``) ends keel and leaves the guard to stop the command.
    """
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        _GUARD,
        str(os.getpid()),
        f"{grace_s:g}",
        "--",
        *command,
        env=env,
        process_group=0,
    )


def _pass_sigterm(guard: asyncio.subprocess.Process) -> None:
    """Ask the guard to stop the command's group (SIGTERM, SIGKILL after the grace)."""
    with contextlib.suppress(ProcessLookupError):
        guard.send_signal(signal.SIGTERM)


async def _stop(guard: asyncio.subprocess.Process) -> int:
    """Stop the command's group through the guard and wait until the guard has exited."""
    _pass_sigterm(guard)
    return await asyncio.shield(guard.wait())


async def _supervise(guard: asyncio.subprocess.Process, lost: LossFlag) -> int | None:
    """The command's exit code, or None if the lock was lost first (the command is stopped)."""
    waiter = asyncio.ensure_future(guard.wait())
    loser = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait([waiter, loser], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # Ctrl-C: the command's group goes before the lock does
        await _stop(guard)
        raise
    finally:
        loser.cancel()
    if waiter.done():
        return waiter.result()
    await _stop(guard)
    return None


async def _say_holder(store: Store, name: str) -> None:
    """If someone holds lock ``name``, say on stderr that we wait, and for whom."""
    from keel.coord import read_lines

    for line in await read_lines(store, [f"locks/{name}/"]):
        if line.owner is None or line.name != name:
            continue
        info = await store.time_to_live(line.owner.lease)
        ttl = f", its lease has {info.ttl}s left" if info else ""
        err_console.print(
            f"keel lock: waiting for {printable(name)!r}: held by session lease "
            f"{line.owner.lease:x} (fencing token {line.fencing_token}{ttl}; "
            f"{line.waiters} waiting); see 'keel locks'",
            markup=False,
        )


async def run_locked(
    store: Store, name: str, command: list[str], ttl_s: int, timeout_s: float | None
) -> int:
    from keel.coord import Lock, Session

    # The group must be gone before the lease can expire under a dead keel:
    # the last keepalive was at most ttl/3 ago, so half the TTL is safe.
    grace_s = min(_GRACE_S, ttl_s / 2)
    async with Session(store, ttl_s=ttl_s) as session:
        await _say_holder(store, name)
        try:
            held = await Lock(session, name).acquire(timeout_s=timeout_s)
        except TimeoutError:
            fail(
                f"lock {name!r} not acquired within {timeout_s}s: it is held elsewhere "
                f"(see 'keel locks'); try again or give a longer --timeout",
                EXIT_TIMED_OUT,
            )
        err_console.print(
            f"keel lock: acquired {printable(name)!r} with fencing token {held.fencing_token}",
            markup=False,
        )
        async with held:
            env = {**os.environ, "KEEL_LOCK": name, "KEEL_FENCING_TOKEN": str(held.fencing_token)}
            guard = await _start_guarded(command, env, grace_s)
            # SIGTERM to keel stops the command's group; the lock is released after it ends.
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, _pass_sigterm, guard)
            try:
                code = await _supervise(guard, held.lost)
            finally:
                loop.remove_signal_handler(signal.SIGTERM)
            if code is None:
                fail(
                    f"lock {name!r} was lost while the command ran ({held.lost.reason}): "
                    f"the command was stopped; run it again",
                    EXIT_LOCK_LOST,
                )
            return code

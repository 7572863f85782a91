"""``keel locks``, ``keel lock NAME -- CMD`` and ``keel leader NAME``.

``keel lock`` runs the command through a guard process (:mod:`._lockguard`)
so that the command, and everything it starts in its process group, is gone
before another holder can run: when keel is killed (even ``kill -9``), when
the lock is lost, and when the command exits leaving children behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from keel.cli._common import EXIT_LOCK_LOST, cell, console, fail, printable, run, with_store
from keel.coord import Election, Leader, LineState, Lock, LossFlag, Session, read_lines
from keel.store import Store

__all__ = ["register"]


def _lease_ttl_text(ttl: int | None) -> str:
    return "" if ttl is None else f"{ttl}s"


async def _lines_with_ttls(store: Store, kinds: list[str]) -> list[tuple[LineState, int | None]]:
    out: list[tuple[LineState, int | None]] = []
    for line in await read_lines(store, kinds):
        info = await store.time_to_live(line.owner.lease) if line.owner else None
        out.append((line, info.ttl if info else None))
    return out


def locks_cmd(
    all_kinds: Annotated[
        bool, typer.Option("--all", help="Also show semaphores and rwlocks.")
    ] = False,
) -> None:
    """List held locks: owner lease, fencing token, waiters, owner's lease TTL."""
    kinds = ["locks/", "semaphores/", "rwlocks/"] if all_kinds else ["locks/"]

    @with_store(readonly=True)
    async def go(store: Store) -> list[tuple[LineState, int | None]]:
        return await _lines_with_ttls(store, kinds)

    rows = run(go())
    table = Table(title=f"{len(rows)} held", title_justify="left")
    for column in ("kind", "name", "owner lease", "token", "waiters", "lease ttl"):
        table.add_column(column)
    for line, ttl in rows:
        owner = line.owner
        table.add_row(
            cell(line.kind),
            cell(line.name),
            f"{owner.lease:x}" if owner else "",
            str(line.fencing_token),
            str(line.waiters),
            _lease_ttl_text(ttl),
        )
    console.print(table)


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


async def _run_locked(
    store: Store, name: str, command: list[str], ttl_s: int, timeout_s: float | None
) -> int:
    # The group must be gone before the lease can expire under a dead keel:
    # the last keepalive was at most ttl/3 ago, so half the TTL is safe.
    grace_s = min(_GRACE_S, ttl_s / 2)
    async with Session(store, ttl_s=ttl_s) as session:
        try:
            held = await Lock(session, name).acquire(timeout_s=timeout_s)
        except TimeoutError:
            fail(f"lock {name!r} not acquired within {timeout_s}s: it is held elsewhere")
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


def lock_cmd(
    name: str,
    command: Annotated[list[str], typer.Argument(help="The command to run while holding it.")],
    ttl: Annotated[int, typer.Option(help="Session TTL in seconds.")] = 10,
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds (0 = wait for ever).")
    ] = 0.0,
) -> None:
    """Run COMMAND while holding lock NAME, cluster-wide (the distributed `flock`).

    The command runs in its own process group and gets KEEL_LOCK and
    KEEL_FENCING_TOKEN in its environment. If the lock is lost while it runs,
    or keel is killed, the group gets SIGTERM (SIGKILL 5 s later, or half the
    TTL if shorter) and keel exits with code 3; otherwise keel exits with the
    command's code, after stopping what the command left running.
    """
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail("give the command after '--', e.g. keel lock nightly -- ./backup.sh")
    if timeout < 0 or not math.isfinite(timeout):
        fail(
            f"--timeout {timeout} is not a number of seconds >= 0: give e.g. 30 (0 = wait for ever)"
        )
    if shutil.which(command[0]) is None:
        fail(f"cannot run {command[0]!r}: no such executable file; check the command and PATH")

    @with_store
    async def go(store: Store) -> int:
        return await _run_locked(store, name, command, ttl, timeout or None)

    raise typer.Exit(run(go()))


def _leader_line(leader: Leader | None) -> str:
    if leader is None:
        return "no leader"
    value = printable(leader.value.decode("utf-8", "backslashreplace"))
    return f"{value}  (token {leader.fencing_token}, lease {leader.lease:x})"


def leader_cmd(
    name: str,
    watch: Annotated[bool, typer.Option("--watch", help="Follow leader changes.")] = False,
) -> None:
    """Show the current leader of election NAME (or follow it with --watch)."""

    @with_store(readonly=True)
    async def go(store: Store) -> None:
        async with Session(store, ttl_s=10) as session:
            election = Election(session, name)
            if not watch:
                console.print(Text(_leader_line(await election.leader())))
                return
            async for leader in election.observe():
                print(_leader_line(leader), flush=True)

    run(go())


def register(app: typer.Typer) -> None:
    """Add the coordination commands to the root app."""
    app.command("locks")(locks_cmd)
    app.command("lock", context_settings={"allow_interspersed_args": False})(lock_cmd)
    app.command("leader")(leader_cmd)

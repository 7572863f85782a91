"""``keel locks``, ``keel lock NAME -- CMD`` and ``keel leader NAME``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Annotated

import typer
from rich.table import Table

from keel.cli._common import console, fail, run, with_store
from keel.coord import Election, Leader, LineState, Lock, Session, read_lines
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

    @with_store
    async def go(store: Store) -> list[tuple[LineState, int | None]]:
        return await _lines_with_ttls(store, kinds)

    rows = run(go())
    table = Table(title=f"{len(rows)} held", title_justify="left")
    for column in ("kind", "name", "owner lease", "token", "waiters", "lease ttl"):
        table.add_column(column)
    for line, ttl in rows:
        owner = line.owner
        table.add_row(
            line.kind,
            line.name,
            f"{owner.lease:x}" if owner else "",
            str(line.fencing_token),
            str(line.waiters),
            _lease_ttl_text(ttl),
        )
    console.print(table)


async def _run_locked(
    store: Store, name: str, command: list[str], ttl_s: int, timeout_s: float | None
) -> int:
    async with Session(store, ttl_s=ttl_s) as session:
        try:
            held = await Lock(session, name).acquire(timeout_s=timeout_s)
        except TimeoutError:
            fail(f"lock {name!r} not acquired within {timeout_s}s: it is held elsewhere")
        async with held:
            env = {**os.environ, "KEEL_LOCK": name, "KEEL_FENCING_TOKEN": str(held.fencing_token)}
            try:
                proc = await asyncio.create_subprocess_exec(*command, env=env)
            except OSError as exc:
                fail(f"cannot run {command[0]!r}: {exc.strerror}")
            # SIGTERM to keel is passed on to the command; the lock is released after it ends.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: proc.send_signal(signal.SIGTERM)
            )
            waiter = asyncio.ensure_future(proc.wait())
            loser = asyncio.ensure_future(held.lost.wait())
            await asyncio.wait([waiter, loser], return_when=asyncio.FIRST_COMPLETED)
            loser.cancel()
            if not waiter.done():
                # The lock is gone: another process may own it now. Stop the command.
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                await waiter
                fail(f"lock {name!r} was lost while the command ran: {held.lost.reason}", 3)
            return waiter.result()


def lock_cmd(
    name: str,
    command: Annotated[list[str], typer.Argument(help="The command to run while holding it.")],
    ttl: Annotated[int, typer.Option(help="Session TTL in seconds.")] = 10,
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds (0 = wait for ever).")
    ] = 0.0,
) -> None:
    """Run COMMAND while holding lock NAME, cluster-wide (the distributed `flock`).

    The command gets KEEL_FENCING_TOKEN in its environment; if the lock is lost
    while it runs, the command is sent SIGTERM and keel exits with code 3.
    """
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail("give the command after '--', e.g. keel lock nightly -- ./backup.sh")

    @with_store
    async def go(store: Store) -> int:
        return await _run_locked(store, name, command, ttl, timeout or None)

    raise typer.Exit(run(go()))


def _leader_line(leader: Leader | None) -> str:
    if leader is None:
        return "no leader"
    value = leader.value.decode("utf-8", "replace")
    return f"{value}  (token {leader.fencing_token}, lease {leader.lease:x})"


def leader_cmd(
    name: str,
    watch: Annotated[bool, typer.Option("--watch", help="Follow leader changes.")] = False,
) -> None:
    """Show the current leader of election NAME (or follow it with --watch)."""

    @with_store
    async def go(store: Store) -> None:
        async with Session(store, ttl_s=10) as session:
            election = Election(session, name)
            if not watch:
                console.print(_leader_line(await election.leader()))
                return
            async for leader in election.observe():
                print(_leader_line(leader), flush=True)

    run(go())


def register(app: typer.Typer) -> None:
    """Add the coordination commands to the root app."""
    app.command("locks")(locks_cmd)
    app.command("lock", context_settings={"allow_interspersed_args": False})(lock_cmd)
    app.command("leader")(leader_cmd)

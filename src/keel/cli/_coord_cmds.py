"""``keel locks``, ``keel lock NAME -- CMD`` and ``keel leader NAME``.

``keel lock`` runs the command through a guard process (:mod:`._lockguard`)
so that the command, and everything it starts in its process group, is gone
before another holder can run: when keel is killed (even ``kill -9``), when
the lock is lost, and when the command exits leaving children behind.
"""

from __future__ import annotations

import math
import shutil
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from keel.cli._common import (
    EXIT_NOT_FOUND,
    cell,
    fail,
    printable,
    run,
    with_store,
)
from keel.cli._output import JsonFlag, OutputOption, emit, emit_event, output_format

if TYPE_CHECKING:
    from keel.coord import Leader, LineState
    from keel.store import Store

__all__ = ["register"]


def _lease_ttl_text(ttl: int | None) -> str:
    return "" if ttl is None else f"{ttl}s"


async def _lines_with_ttls(store: Store, kinds: list[str]) -> list[tuple[LineState, int | None]]:
    from keel.coord import read_lines

    out: list[tuple[LineState, int | None]] = []
    for line in await read_lines(store, kinds):
        info = await store.time_to_live(line.owner.lease) if line.owner else None
        out.append((line, info.ttl if info else None))
    return out


def _line_record(line: LineState, ttl: int | None) -> dict[str, Any]:
    owner = line.owner
    return {
        "kind": line.kind,
        "name": line.name,
        "owner_lease": f"{owner.lease:x}" if owner else None,
        "fencing_token": line.fencing_token,
        "waiters": line.waiters,
        "lease_ttl": ttl,
    }


def locks_cmd(
    all_kinds: Annotated[
        bool, typer.Option("--all", help="Also show semaphores and rwlocks.")
    ] = False,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """List held locks: owner lease, fencing token, waiters, owner's lease TTL."""
    kinds = ["locks/", "semaphores/", "rwlocks/"] if all_kinds else ["locks/"]
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> list[tuple[LineState, int | None]]:
        return await _lines_with_ttls(store, kinds)

    rows = run(go())

    def table(wide: bool) -> Table:
        t = Table(title=f"{len(rows)} held", title_justify="left")
        for column in ("kind", "name", "owner lease", "token", "waiters", "lease ttl"):
            t.add_column(column)
        for line, ttl in rows:
            owner = line.owner
            t.add_row(
                cell(line.kind),
                cell(line.name),
                f"{owner.lease:x}" if owner else "",
                str(line.fencing_token),
                str(line.waiters),
                _lease_ttl_text(ttl),
            )
        return t

    emit(fmt, [_line_record(line, ttl) for line, ttl in rows], table)


def lock_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    command: Annotated[
        list[str], typer.Argument(metavar="COMMAND...", help="The command to run while holding it.")
    ],
    ttl: Annotated[int, typer.Option(metavar="SECONDS", help="Session TTL in seconds.")] = 10,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", help="Give up after this many seconds, exit 4 (0 = wait for ever)."
        ),
    ] = 0.0,
) -> None:
    """Run COMMAND while holding lock NAME, cluster-wide (the distributed `flock`).

    The command runs in its own process group and gets KEEL_LOCK and
    KEEL_FENCING_TOKEN in its environment; on stderr keel says whom it waits
    for and the fencing token it got. If the lock is lost while it runs, or
    keel is killed, the group gets SIGTERM (SIGKILL 5 s later, or half the TTL
    if shorter) and keel exits with code 5; not acquired within --timeout:
    code 4; otherwise keel exits with the command's code, after stopping what
    the command left running.
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
        from keel.cli._lockrun import run_locked

        return await run_locked(store, name, command, ttl, timeout or None)

    raise typer.Exit(run(go()))


def _leader_line(leader: Leader | None) -> str:
    if leader is None:
        return "no leader"
    value = printable(leader.value.decode("utf-8", "backslashreplace"))
    return f"{value}  (token {leader.fencing_token}, lease {leader.lease:x})"


def _leader_record(name: str, leader: Leader | None) -> dict[str, Any]:
    if leader is None:
        return {"election": name, "leader": None}
    return {
        "election": name,
        "leader": leader.value.decode("utf-8", "backslashreplace"),
        "fencing_token": leader.fencing_token,
        "lease": f"{leader.lease:x}",
        "key": leader.key,
    }


def leader_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    watch: Annotated[bool, typer.Option("--watch", help="Follow leader changes.")] = False,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Show the current leader of election NAME (or follow it with --watch).

    Exit code 1 when the election has no leader (nobody campaigns under NAME).
    """
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> Leader | None:
        from keel.coord import Election, Session

        async with Session(store, ttl_s=10) as session:
            election = Election(session, name)
            if not watch:
                return await election.leader()
            async for leader in election.observe():
                emit_event(fmt, _leader_record(name, leader), _leader_line(leader))
        return None

    leader = run(go())
    if watch:
        return
    if leader is None:
        fail(f"election {name!r} has no leader: nobody campaigns under that name", EXIT_NOT_FOUND)
    emit(fmt, _leader_record(name, leader), lambda wide: cell(_leader_line(leader)))


def register(app: typer.Typer) -> None:
    """Add the coordination commands to the root app."""
    app.command("locks")(locks_cmd)
    app.command("lock", context_settings={"allow_interspersed_args": False})(lock_cmd)
    app.command("leader")(leader_cmd)

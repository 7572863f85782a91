"""``keel sagas [ls] [--status S]``, ``keel sagas show|retry|abort ID``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import msgspec
import typer
from rich.table import Table

from keel.cli._common import EXIT_NOT_FOUND, console, err_console, fail, run, with_store
from keel.errors import NotFoundError

if TYPE_CHECKING:  # keel.saga is imported when a command runs: keel --help starts fast
    from keel._records import Rejected
    from keel.saga import SagaRecord, Status
    from keel.store import Store

__all__ = ["register"]

T = TypeVar("T")

sagas_app = typer.Typer(
    help="Sagas: list, show, retry a failed one, abort a running one.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _status(text: str | None) -> Status | None:
    from keel.saga import Status

    if text is None:
        return None
    try:
        return Status(text)
    except ValueError:
        fail(f"unknown status {text!r}: use one of {', '.join(s.value for s in Status)}")


def _run(call: Callable[[Store], Awaitable[T]]) -> T:
    @with_store
    async def go(store: Store) -> T:
        try:
            return await call(store)
        except NotFoundError as exc:
            fail(str(exc), EXIT_NOT_FOUND)

    return run(go())


def _list(status: Status | None) -> None:
    from keel.saga import Status, list_sagas

    rejected: list[Rejected] = []
    recs = _run(lambda store: list_sagas(store, status=status, on_reject=rejected.append))
    for rejection in rejected:
        err_console.print(
            f"keel: skipped {rejection}: fix or delete it", highlight=False, markup=False
        )
    table = Table(title=f"{len(recs)} sagas", title_justify="left")
    for column in ("saga id", "status", "steps done", "created (UTC)", "updated (UTC)", "error"):
        table.add_column(column)
    for r in recs:
        done = sum(1 for s in r.steps.values() if s.state == "done")
        state = r.status.value + (
            " (abort asked)" if r.abort and r.status is Status.RUNNING else ""
        )
        table.add_row(
            f"{r.saga}/{r.id}",
            state,
            f"{done}/{len(r.steps)}",
            _when(r.created_at),
            _when(r.updated_at),
            r.error[:60],
        )
    console.print(table)


@sagas_app.callback()
def sagas_cmd(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(help="Only sagas in this status (running, compensating, committed...)."),
    ] = None,
) -> None:
    """List sagas: id, status, steps done, times, error."""
    if ctx.invoked_subcommand is None:
        _list(_status(status))


@sagas_app.command("ls")
def ls_cmd(
    status: Annotated[str | None, typer.Option(help="Only sagas in this status.")] = None,
) -> None:
    """List sagas: id, status, steps done, times, error."""
    _list(_status(status))


def _print(rec: SagaRecord) -> None:
    console.print_json(json.dumps(msgspec.to_builtins(rec)))


@sagas_app.command("show")
def show_cmd(
    saga_id: Annotated[str, typer.Argument(metavar="ID", help="<saga name>/<id>")],
) -> None:
    """Print a saga's record (JSON): status, each step's state, results, errors, attempts."""
    from keel.saga import get_saga

    _print(_run(lambda store: get_saga(store, saga_id)))


@sagas_app.command("retry")
def retry_cmd(
    saga_id: Annotated[str, typer.Argument(metavar="ID", help="<saga name>/<id>")],
) -> None:
    """Send a FAILED saga back to compensating (a running coordinator takes it up)."""
    from keel.saga import retry_saga

    _run(lambda store: retry_saga(store, saga_id))
    console.print(f"{saga_id}: compensating again")


@sagas_app.command("abort")
def abort_cmd(
    saga_id: Annotated[str, typer.Argument(metavar="ID", help="<saga name>/<id>")],
) -> None:
    """Ask a running saga to compensate (its coordinator does so at its next transition)."""
    from keel.saga import abort_saga

    rec = _run(lambda store: abort_saga(store, saga_id))
    console.print(f"{saga_id}: abort asked ({rec.status.value})")


def register(app: typer.Typer) -> None:
    """Add ``keel sagas ...`` to the root app."""
    app.add_typer(sagas_app, name="sagas")

"""``keel sagas [ls] [--status S]``, ``keel sagas show|retry|abort ID``.

``keel.saga`` is imported when a command runs, not when the CLI starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import RenderableType
from rich.table import Table

from keel.cli._common import EXIT_NOT_FOUND, cell, console, err_console, fail, run, with_store
from keel.cli._output import JsonFlag, OutputOption, emit, output_format

if TYPE_CHECKING:
    from keel._records import Rejected
    from keel.saga import SagaRecord, Status
    from keel.store import Store

__all__ = ["register"]

T = TypeVar("T")
_STATUSES = ("running", "compensating", "committed", "compensated", "failed")

sagas_app = typer.Typer(
    help="Sagas: list, show, retry a failed one, abort a running one.",
    invoke_without_command=True,
    no_args_is_help=False,
)

IdArg = Annotated[str, typer.Argument(metavar="ID", help="The saga id: <saga name>/<id>.")]
StatusOption = Annotated[
    str | None, typer.Option(help=f"Only sagas in this status: {', '.join(_STATUSES)}.")
]


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _status(text: str | None) -> Status | None:
    from keel.saga import Status

    if text is None:
        return None
    if text not in _STATUSES:
        fail(f"unknown status {text!r}: use one of {', '.join(_STATUSES)}")
    return Status(text)


def _run(call: Callable[[Store], Awaitable[T]], *, readonly: bool) -> T:
    from keel.errors import NotFoundError

    @with_store(readonly=readonly)
    async def go(store: Store) -> T:
        try:
            return await call(store)
        except NotFoundError as exc:
            fail(str(exc), EXIT_NOT_FOUND)

    return run(go())


def _record(rec: SagaRecord) -> dict[str, Any]:
    import msgspec

    data: dict[str, Any] = msgspec.to_builtins(rec)
    return {"saga_id": f"{rec.saga}/{rec.id}", **data}


def _list(status: Status | None, fmt: str) -> None:
    from keel.saga import Status, list_sagas

    rejected: list[Rejected] = []
    recs = _run(
        lambda store: list_sagas(store, status=status, on_reject=rejected.append), readonly=True
    )
    for rejection in rejected:  # the listing goes on without them; say which and why
        err_console.print(
            f"keel: skipped {rejection}: fix or delete it", highlight=False, markup=False
        )

    def table(wide: bool) -> Table:
        t = Table(title=f"{len(recs)} saga{'' if len(recs) == 1 else 's'}", title_justify="left")
        columns = ["saga id", "status", "steps done", "created (UTC)", "updated (UTC)", "error"]
        for column in columns + (["owner"] if wide else []):
            t.add_column(column)
        for r in recs:
            done = sum(1 for s in r.steps.values() if s.state == "done")
            state = r.status.value
            if r.abort and r.status is Status.RUNNING:
                state += " (abort asked)"
            row: list[RenderableType] = [
                cell(f"{r.saga}/{r.id}"),
                state,
                f"{done}/{len(r.steps)}",
                _when(r.created_at),
                _when(r.updated_at),
                cell(r.error if wide else r.error[:60]),
            ]
            t.add_row(*row, *([cell(r.owner)] if wide else []))
        return t

    emit(fmt, [_record(r) for r in recs], table)


@sagas_app.callback()
def sagas_cmd(
    ctx: typer.Context,
    status: StatusOption = None,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """List sagas: id, status, steps done, times, error."""
    if ctx.invoked_subcommand is None:
        _list(_status(status), output_format(output, as_json))


@sagas_app.command("ls")
def ls_cmd(
    status: StatusOption = None, output: OutputOption = "table", as_json: JsonFlag = False
) -> None:
    """List sagas: id, status, steps done, times, error."""
    _list(_status(status), output_format(output, as_json))


@sagas_app.command("show")
def show_cmd(saga_id: IdArg, output: OutputOption = "json", as_json: JsonFlag = False) -> None:
    """Print a saga's record: status, each step's state, results, errors, attempts."""
    from keel.saga import get_saga

    fmt = output_format(output, as_json)
    rec = _run(lambda store: get_saga(store, saga_id), readonly=True)

    def table(wide: bool) -> Table:
        t = Table(
            title=f"{rec.saga}/{rec.id}: {rec.status.value}", title_justify="left", highlight=False
        )
        for column in ("step", "state", "attempts", "compensations", "error"):
            t.add_column(column)
        for name, s in rec.steps.items():
            t.add_row(
                cell(name), s.state.value, str(s.attempts), str(s.compensations), cell(s.error)
            )
        return t

    emit(fmt, _record(rec), table)


@sagas_app.command("retry")
def retry_cmd(saga_id: IdArg) -> None:
    """Send a FAILED saga back to compensating (a running coordinator takes it up)."""
    from keel.saga import retry_saga

    _run(lambda store: retry_saga(store, saga_id), readonly=False)
    console.print(cell(f"{saga_id}: compensating again"))


@sagas_app.command("abort")
def abort_cmd(saga_id: IdArg) -> None:
    """Ask a running saga to compensate (its coordinator does so at its next transition)."""
    from keel.saga import abort_saga

    rec = _run(lambda store: abort_saga(store, saga_id), readonly=False)
    console.print(cell(f"{saga_id}: abort asked ({rec.status.value})"))


def register(app: typer.Typer) -> None:
    """Add ``keel sagas ...`` to the root app."""
    app.add_typer(sagas_app, name="sagas")

"""``keel gateway keys add CONSUMER [--note]``, ``keel gateway keys rm KEY_ID``, ``keys ls``.

``add`` prints the new key once, alone on stdout (so ``KEY=$(keel gateway keys
add alice)`` works), and a warning on stderr that it cannot be shown again: the
store keeps only its SHA-256 hash. ``ls`` shows ids, consumers, notes and
creation times, never a hash or a key. ``rm`` revokes at once (exit 1 if there
is no such key); running gateways stop accepting the key within a second.

``keel.gateway`` is imported when a command runs, not when the CLI starts. The
``keel gateway`` command group mounts :data:`keys_app` under ``keys``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from keel.cli._common import EXIT_NOT_FOUND, cell, console, err_console, fail, run, with_store
from keel.cli._output import JsonFlag, OutputOption, emit, output_format

if TYPE_CHECKING:
    from keel._records import Rejected
    from keel.gateway._apikeys import ApiKeyInfo
    from keel.store import Store

__all__ = ["keys_app"]

T = TypeVar("T")

keys_app = typer.Typer(
    help="API keys of the gateway: add (prints the key once), rm, ls.",
    no_args_is_help=True,
)


def _run(call: Callable[[Store], Awaitable[T]], *, readonly: bool) -> T:
    @with_store(readonly=readonly)
    async def go(store: Store) -> T:
        return await call(store)

    return run(go())


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _info(info: ApiKeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "consumer": info.consumer,
        "created_at": info.created_at,
        "note": info.note,
    }


@keys_app.command("add")
def add_cmd(
    consumer: Annotated[str, typer.Argument(help="Who the key belongs to (sent upstream).")],
    note: Annotated[str, typer.Option(help="A note shown by 'ls' (what the key is for).")] = "",
) -> None:
    """Issue a key for CONSUMER; print it once (only its hash is stored)."""
    from keel.gateway._apikeys import add_key

    key_id, secret = _run(lambda store: add_key(store, consumer, note=note), readonly=False)
    sys.stdout.write(secret + "\n")
    sys.stdout.flush()
    err_console.print(
        f"keel: key {key_id} added for {consumer!r}: this is the only time it is shown; "
        "store it now (only its hash is kept)",
        highlight=False,
        markup=False,
    )


@keys_app.command("rm")
def rm_cmd(key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id.")]) -> None:
    """Revoke a key (gateways stop accepting it within a second)."""
    from keel.gateway._apikeys import remove_key

    if not _run(lambda store: remove_key(store, key_id), readonly=False):
        fail(f"no API key {key_id!r}: list them with 'keel gateway keys ls'", EXIT_NOT_FOUND)
    console.print(cell(f"key {key_id} revoked"))


@keys_app.command("ls")
def ls_cmd(output: OutputOption = "table", as_json: JsonFlag = False) -> None:
    """List keys: id, consumer, created, note (never the key or its hash)."""
    from keel.gateway._apikeys import list_keys

    fmt = output_format(output, as_json)
    rejected: list[Rejected] = []
    infos = _run(lambda store: list_keys(store, on_reject=rejected.append), readonly=True)
    for rejection in rejected:
        err_console.print(
            f"keel: skipped {rejection}: fix or delete it", highlight=False, markup=False
        )

    def table(wide: bool) -> Table:
        t = Table(title=f"{len(infos)} key{'' if len(infos) == 1 else 's'}", title_justify="left")
        for column in ("id", "consumer", "created (UTC)", "note"):
            t.add_column(column)
        for i in infos:
            t.add_row(cell(i.id), cell(i.consumer), _when(i.created_at), cell(i.note))
        return t

    emit(fmt, [_info(i) for i in infos], table)

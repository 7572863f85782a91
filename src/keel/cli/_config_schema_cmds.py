"""``keel config schema set|get|rm|history`` and ``keel config validate`` (the CI check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from keel.cli._common import (
    EXIT_NOT_FOUND,
    cell,
    console,
    err_console,
    fail,
    printable,
    run,
    with_store,
)
from keel.cli._output import JsonFlag, OutputOption, emit, output_format

if TYPE_CHECKING:
    from keel.config import ConfigSchema
    from keel.store import Store

__all__ = ["schema_app", "validate_cmd"]

schema_app = typer.Typer(
    help="JSON Schemas checked before publish, gray and rollback.", no_args_is_help=True
)


def _read_text(path: Path) -> str:
    import sys

    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}; give a readable UTF-8 file ('-' for stdin)")


def _load_schema(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path} is not JSON ({exc}): give a JSON Schema document")
    if not isinstance(schema, dict):
        fail(f"{path} holds a JSON {type(schema).__name__}: a JSON Schema is an object")
    return schema


def _record(s: ConfigSchema) -> dict[str, Any]:
    return {
        "name": s.name,
        "version": s.version,
        "author": s.author,
        "comment": s.comment,
        "published_at": s.published_at,
        "schema": dict(s.schema),
    }


@schema_app.command("set")
def set_cmd(
    name: str,
    file: Annotated[Path, typer.Argument(help="A JSON Schema document ('-' for stdin).")],
    author: Annotated[str, typer.Option(help="Who sets it.")] = "",
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why.")] = "",
) -> None:
    """Set the JSON Schema of NAME (a new schema version; the old ones stay in history)."""
    schema = _load_schema(file)

    @with_store
    async def go(store: Store) -> ConfigSchema:
        from keel.config import ConfigCenter

        return await ConfigCenter(store).set_schema(name, schema, author=author, comment=comment)

    record = run(go())
    console.print(f"{name}: schema version {record.version} set")


@schema_app.command("get")
def get_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    output: OutputOption = "json",
    as_json: JsonFlag = False,
) -> None:
    """Print the current schema of NAME (-o json|yaml: the whole record; exit 1 if none)."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> ConfigSchema | None:
        from keel.config import ConfigCenter

        return await ConfigCenter(store).schema(name)

    record = run(go())
    if record is None:
        fail(f"{name} has no schema: set one with 'keel config schema set {name} FILE'", 1)
    if fmt in ("table", "wide"):
        print(json.dumps(dict(record.schema), indent=2, sort_keys=True))
        return
    emit(fmt, _record(record), lambda wide: "")


@schema_app.command("history")
def history_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """List the schema versions of NAME."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> list[ConfigSchema]:
        from keel.config import ConfigCenter

        return await ConfigCenter(store).schema_history(name)

    records = run(go())
    if not records:
        fail(f"{name} has no schema history", EXIT_NOT_FOUND)

    def table(wide: bool) -> Table:
        t = Table(title=f"{name} schema history", title_justify="left")
        for column in ("version", "author", "comment"):
            t.add_column(column)
        for s in records:
            t.add_row(*map(cell, (str(s.version), s.author, s.comment)))
        return t

    emit(fmt, [_record(s) for s in records], table)


@schema_app.command("rm")
def rm_cmd(name: str) -> None:
    """Remove the schema of NAME (documents are no longer checked; history is kept)."""

    @with_store
    async def go(store: Store) -> bool:
        from keel.config import ConfigCenter

        return await ConfigCenter(store).delete_schema(name)

    if not run(go()):
        fail(f"{name} has no schema", EXIT_NOT_FOUND)
    console.print(f"{name}: schema removed")


def validate_cmd(
    name: str,
    file: Annotated[Path, typer.Argument(help="The document to check ('-' for stdin).")],
    schema: Annotated[
        Path | None,
        typer.Option(help="Check against this JSON Schema file instead of the store's (no store)."),
    ] = None,
    format: Annotated[str | None, typer.Option(help="yaml, json, toml, properties, text.")] = None,
) -> None:
    """Check FILE against NAME's schema without publishing (exit 0 valid, 2 invalid).

    For CI: with --schema no store is needed; otherwise the store's schema is
    read (nothing is written).
    """
    content = _read_text(file)
    local = _load_schema(schema) if schema is not None else None

    async def go() -> None:
        from keel.config import ConfigCenter, ConfigSchema, schema_of
        from keel.config._formats import check_format, guess_format
        from keel.config._schema import check_document

        fmt = check_format(format) if format is not None else guess_format(name)
        if local is not None:
            record = ConfigSchema(name=name, schema=schema_of(local), version=0)
            check_document(record, content, fmt, what=str(file))
            return

        @with_store(readonly=True)
        async def against_store(store: Store) -> None:
            await ConfigCenter(store).validate(name, content, format=fmt)

        await against_store()

    run(go())
    err_console.print(printable(f"{file}: valid for {name}"), markup=False)

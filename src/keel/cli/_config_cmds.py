"""``keel config ...``: publish, inspect, diff, roll back and gray-release configs."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
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
from keel.cli._output import JsonFlag, OutputOption, emit, emit_event, output_format
from keel.errors import ValidationError

if TYPE_CHECKING:
    from keel.config import ConfigCenter, ConfigDocument, ConfigSummary, GrayRelease
    from keel.store import Event, Store

__all__ = ["app"]

app = typer.Typer(
    help="The config center: publish, history, diff, rollback, gray.", no_args_is_help=True
)


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else ""


def _read(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}; give a readable UTF-8 file ('-' for stdin)")


def _center(store: Store) -> ConfigCenter:
    from keel.config import ConfigCenter

    return ConfigCenter(store)


def _doc_record(d: ConfigDocument, content: bool = False) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": d.name,
        "version": d.version,
        "format": d.format,
        "md5": d.md5,
        "author": d.author,
        "comment": d.comment,
        "published_at": d.published_at,
    }
    return {**record, "content": d.content} if content else record


@app.command("ls")
def ls_cmd(output: OutputOption = "table", as_json: JsonFlag = False) -> None:
    """List configs with their version, format and gray state (malformed records marked)."""
    out = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> list[ConfigSummary]:
        return await _center(store).list()

    summaries = run(go())

    def table(wide: bool) -> Table:
        t = Table(title="configs", title_justify="left")
        for column in ("name", "version", "format", "md5", "published (UTC)", "gray"):
            t.add_column(column)
        for s in summaries:
            version, fmt = ("malformed", "") if s.rejected else (str(s.version), s.format)
            gray = "yes" if s.gray else ""
            md5 = s.md5 if wide else s.md5[:12]
            row = (s.name, version, fmt, md5, _when(s.published_at), gray)
            t.add_row(*map(cell, row))
        return t

    records = [
        {
            "name": s.name,
            "version": None if s.rejected else s.version,
            "format": None if s.rejected else s.format,
            "md5": s.md5,
            "published_at": s.published_at,
            "gray": s.gray,
            "malformed": bool(s.rejected),
        }
        for s in summaries
    ]
    emit(out, records, table)
    bad = [s.name for s in summaries if s.rejected]
    if bad:
        err_console.print(
            f"keel: warning: {len(bad)} config record(s) malformed ({', '.join(bad)}): "
            f"'keel config get NAME' says why and how to repair it",
            markup=False,
        )


@app.command("get")
def get_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    version: Annotated[
        int, typer.Option(metavar="N", help="A past version (default: current).")
    ] = 0,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", metavar="FORMAT", help="json or yaml: the record with its content."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a config's content (its whole record with -o json|yaml)."""

    @with_store(readonly=True)
    async def go(store: Store) -> ConfigDocument | None:
        center = _center(store)
        return await (center.version(name, version) if version else center.get(name))

    doc = run(go())
    if doc is None:
        fail(f"config {name!r} not found: list them with 'keel config ls'", code=1)
    if output is None and not as_json:
        sys.stdout.write(doc.content)
        return
    fmt = output_format(output or "json", as_json)
    emit(fmt, _doc_record(doc, content=True), lambda wide: doc.content)


@app.command("publish")
def publish_cmd(
    name: str,
    file: Annotated[Path, typer.Argument(help="The document ('-' for stdin).")],
    expected_version: Annotated[
        int | None, typer.Option(help="Publish only if the current version is this (0: new).")
    ] = None,
    format: Annotated[str | None, typer.Option(help="yaml, json, toml, properties, text.")] = None,
    author: Annotated[str, typer.Option(help="Who publishes.")] = "",
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why.")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite a malformed current record.")
    ] = False,
) -> None:
    """Publish FILE as the next version of NAME (validated first; nothing written if invalid)."""
    content = _read(file)

    @with_store
    async def go(store: Store) -> ConfigDocument:
        from keel.config import Format

        fmt: Format | None = format  # type: ignore[assignment]  # checked by the center
        return await _center(store).publish(
            name,
            content,
            format=fmt,
            author=author,
            comment=comment,
            expected_version=expected_version,
            force=force,
        )

    doc = run(go())
    console.print(f"{doc.name} version {doc.version} published (md5 {doc.md5})")


@app.command("history")
def history_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """List the kept versions of NAME (exit 1 when there is none)."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> list[ConfigDocument]:
        return await _center(store).history(name)

    docs = run(go())
    if not docs:
        fail(f"config {name!r} has no history: list configs with 'keel config ls'", EXIT_NOT_FOUND)

    def table(wide: bool) -> Table:
        t = Table(title=f"{name} history", title_justify="left")
        for column in ("version", "published (UTC)", "author", "md5", "comment"):
            t.add_column(column)
        for d in docs:
            md5 = d.md5 if wide else d.md5[:12]
            t.add_row(*map(cell, (str(d.version), _when(d.published_at), d.author, md5, d.comment)))
        return t

    emit(fmt, [_doc_record(d) for d in docs], table)


@app.command("diff")
def diff_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    a: Annotated[int, typer.Argument(metavar="A")],
    b: Annotated[int, typer.Argument(metavar="B")],
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Show a unified diff from version A to version B (-o json: its lines in a document)."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> str:
        return await _center(store).diff(name, a, b)

    text = run(go())
    if fmt in ("json", "yaml"):
        emit(fmt, {"name": name, "from": a, "to": b, "lines": text.splitlines()}, lambda _: "")
    else:
        sys.stdout.write(text or f"versions {a} and {b} are identical\n")


@app.command("rollback")
def rollback_cmd(
    name: str,
    version: int,
    author: Annotated[str, typer.Option(help="Who rolls back.")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite a malformed current record.")
    ] = False,
) -> None:
    """Publish an old VERSION's content as a new version."""

    @with_store
    async def go(store: Store) -> ConfigDocument:
        return await _center(store).rollback(name, version, author=author, force=force)

    doc = run(go())
    console.print(f"{name} version {doc.version} published (content of version {version})")


@app.command("rm")
def rm_cmd(name: str) -> None:
    """Delete a config (its history is kept)."""

    @with_store
    async def go(store: Store) -> bool:
        return await _center(store).delete(name)

    if not run(go()):
        fail(f"config {name!r} not found", code=1)
    console.print(f"{name} deleted (history kept)")


@app.command("gray")
def gray_cmd(
    name: str,
    file: Annotated[Path, typer.Argument(help="The gray document ('-' for stdin).")],
    ids: Annotated[str, typer.Option(help="Client ids, comma-separated.")] = "",
    labels: Annotated[str, typer.Option(help="Label patterns: zone=a,version=2.*")] = "",
    percent: Annotated[float | None, typer.Option(help="Share of matching clients, 0-100.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a running gray.")] = False,
    author: Annotated[str, typer.Option(help="Who publishes.")] = "",
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why.")] = "",
    analysis: Annotated[
        Path | None,
        typer.Option(help="Run it as a canary: steps and checks (YAML), see docs/config.md."),
    ] = None,
) -> None:
    """Start a gray release of FILE for the clients the rule selects (a canary with --analysis)."""
    from keel.cli._config_canary_cmds import load_analysis
    from keel.config import GrayRule

    plan = load_analysis(analysis) if analysis is not None else None
    if plan is not None and percent is None:
        percent = plan.steps[0].percent

    try:
        rule = GrayRule(
            ids=tuple(i.strip() for i in ids.split(",") if i.strip()),
            labels=GrayRule.parse_labels(labels),
            percent=percent,
        )
    except ValidationError as exc:
        fail(f"{exc} (--ids a,b / --labels zone=a / --percent 0-100)")
    content = _read(file)

    @with_store
    async def go(store: Store) -> None:
        await _center(store).publish_gray(
            name, content, rule, author=author, comment=comment, replace=replace, analysis=plan
        )

    run(go())
    if plan is not None:
        steps = " → ".join(f"{s.percent:g}%" for s in plan.steps)
        console.print(f"{name}: canary started ({steps}; the canary controller decides)")
        return
    console.print(f"{name}: gray release started ({json.dumps(rule.to_json())})")


@app.command("promote")
def promote_cmd(name: str) -> None:
    """Make the gray content the next main version."""

    @with_store
    async def go(store: Store) -> ConfigDocument:
        return await _center(store).promote(name)

    doc = run(go())
    console.print(f"{name}: gray promoted as version {doc.version}")


@app.command("abort")
def abort_cmd(name: str) -> None:
    """End the gray release; gray clients return to the main version."""

    @with_store
    async def go(store: Store) -> bool:
        return await _center(store).abort_gray(name)

    if not run(go()):
        fail(f"{name} has no gray release", code=1)
    console.print(f"{name}: gray aborted")


async def _main_state(center: ConfigCenter, name: str) -> str:
    from keel.config import MalformedConfigError

    try:
        doc = await center.get(name)
    except MalformedConfigError:
        return "current record malformed ('keel config publish NAME FILE --force' repairs it)"
    return f"version {doc.version if doc else '-'}"


async def _gray_state(center: ConfigCenter, name: str) -> str:
    from keel.config import MalformedConfigError

    try:
        gray = await center.gray(name)
    except MalformedConfigError:
        return f"gray record malformed ('keel config abort {name}' ends it)"
    if gray is None:
        return "no gray release"
    return f"gray over version {gray.base_version}: {json.dumps(gray.rule.to_json())}"


def _event(name: str, event: Event) -> tuple[dict[str, Any], str]:
    """A watch event as a record and a line; a malformed record is said so (and reported)."""
    from keel._records import Rejected, decode, report
    from keel.config import ConfigDocument, GrayRelease
    from keel.config._model import gray_key
    from keel.store import EventType

    is_gray = event.kv.key == gray_key(name)
    kind = "gray" if is_gray else "main"
    record: dict[str, Any] = {"name": name, "kind": kind, "revision": event.revision}
    if event.type is EventType.DELETE:
        return {**record, "deleted": True}, f"{kind} deleted rev={event.revision}"
    decoder: Callable[[bytes], ConfigDocument | GrayRelease] = (
        GrayRelease.decode if is_gray else ConfigDocument.decode
    )
    rec = decode("config", event.kv.key, event.kv.value, decoder)
    if isinstance(rec, Rejected):
        report(rec)
        line = printable(f"{kind} malformed rev={event.revision} ({rec.reason})")
        return {**record, "malformed": rec.reason}, line
    version = rec.base_version if isinstance(rec, GrayRelease) else rec.version
    line = printable(f"{kind} version={version} md5={rec.md5} rev={event.revision}")
    return {**record, "version": version, "md5": rec.md5}, line


@app.command("watch")
def watch_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    count: Annotated[
        int, typer.Option(metavar="N", help="Stop after this many changes (0: until Ctrl-C).")
    ] = 0,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Print a line (-o json: an object) for each publish, gray change or delete of NAME."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> None:
        from keel.config._model import current_key, gray_key
        from keel.store import merged

        seen = 0
        async with store.watch(current_key(name)) as main, store.watch(gray_key(name)) as gray:
            async for event, _ in merged([main, gray]):
                record, line = _event(name, event)
                emit_event(fmt, record, line)
                seen += 1
                if count and seen >= count:
                    return

    run(go())


def _add_commands() -> None:
    from keel.cli._config_canary_cmds import controller_cmd, status_cmd
    from keel.cli._config_schema_cmds import schema_app, validate_cmd

    app.command("status")(status_cmd)
    app.command("controller")(controller_cmd)
    app.add_typer(schema_app, name="schema")
    app.command("validate")(validate_cmd)


_add_commands()

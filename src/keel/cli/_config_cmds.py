"""``keel config ...``: publish, inspect, diff, roll back and gray-release configs."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from keel._records import Rejected, decode, report
from keel.cli._common import cell, console, err_console, fail, printable, run, with_store
from keel.config import (
    ClientReport,
    ConfigCenter,
    ConfigDocument,
    ConfigSummary,
    Format,
    GrayRelease,
    GrayRule,
    MalformedConfigError,
)
from keel.config._model import current_key, gray_key
from keel.errors import ValidationError
from keel.store import Event, EventType, Store, merged

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


@app.command("ls")
def ls_cmd() -> None:
    """List configs with their version, format and gray state (malformed records marked)."""

    @with_store(readonly=True)
    async def go(store: Store) -> list[ConfigSummary]:
        return await ConfigCenter(store).list()

    table = Table(title="configs", title_justify="left")
    for column in ("name", "version", "format", "md5", "published (UTC)", "gray"):
        table.add_column(column)
    summaries = run(go())
    for s in summaries:
        version, fmt = ("malformed", "") if s.rejected else (str(s.version), s.format)
        gray = "yes" if s.gray else ""
        row = (s.name, version, fmt, s.md5[:12], _when(s.published_at), gray)
        table.add_row(*map(cell, row))
    console.print(table)
    bad = [s.name for s in summaries if s.rejected]
    if bad:
        err_console.print(
            f"keel: warning: {len(bad)} config record(s) malformed ({', '.join(bad)}): "
            f"'keel config get NAME' says why and how to repair it",
            markup=False,
        )


@app.command("get")
def get_cmd(
    name: str,
    version: Annotated[int, typer.Option(help="A past version (default: current).")] = 0,
) -> None:
    """Print a config's content."""

    @with_store(readonly=True)
    async def go(store: Store) -> ConfigDocument | None:
        center = ConfigCenter(store)
        return await (center.version(name, version) if version else center.get(name))

    doc = run(go())
    if doc is None:
        fail(f"config {name!r} not found: list them with 'keel config ls'", code=1)
    sys.stdout.write(doc.content)


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
        fmt: Format | None = format  # type: ignore[assignment]  # checked by the center
        return await ConfigCenter(store).publish(
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
def history_cmd(name: str) -> None:
    """List the kept versions of NAME."""

    @with_store(readonly=True)
    async def go(store: Store) -> list[ConfigDocument]:
        return await ConfigCenter(store).history(name)

    table = Table(title=f"{name} history", title_justify="left")
    for column in ("version", "published (UTC)", "author", "md5", "comment"):
        table.add_column(column)
    for d in run(go()):
        row = (str(d.version), _when(d.published_at), d.author, d.md5[:12], d.comment)
        table.add_row(*map(cell, row))
    console.print(table)


@app.command("diff")
def diff_cmd(name: str, a: int, b: int) -> None:
    """Show a unified diff from version A to version B."""

    @with_store(readonly=True)
    async def go(store: Store) -> str:
        return await ConfigCenter(store).diff(name, a, b)

    sys.stdout.write(run(go()) or f"versions {a} and {b} are identical\n")


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
        return await ConfigCenter(store).rollback(name, version, author=author, force=force)

    doc = run(go())
    console.print(f"{name} version {doc.version} published (content of version {version})")


@app.command("rm")
def rm_cmd(name: str) -> None:
    """Delete a config (its history is kept)."""

    @with_store
    async def go(store: Store) -> bool:
        return await ConfigCenter(store).delete(name)

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
) -> None:
    """Start a gray release of FILE for the clients the rule selects."""
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
        await ConfigCenter(store).publish_gray(
            name, content, rule, author=author, comment=comment, replace=replace
        )

    run(go())
    console.print(f"{name}: gray release started ({json.dumps(rule.to_json())})")


@app.command("promote")
def promote_cmd(name: str) -> None:
    """Make the gray content the next main version."""

    @with_store
    async def go(store: Store) -> ConfigDocument:
        return await ConfigCenter(store).promote(name)

    doc = run(go())
    console.print(f"{name}: gray promoted as version {doc.version}")


@app.command("abort")
def abort_cmd(name: str) -> None:
    """End the gray release; gray clients return to the main version."""

    @with_store
    async def go(store: Store) -> bool:
        return await ConfigCenter(store).abort_gray(name)

    if not run(go()):
        fail(f"{name} has no gray release", code=1)
    console.print(f"{name}: gray aborted")


@app.command("status")
def status_cmd(name: str) -> None:
    """Show the main version, the gray rule, and which clients run what."""

    @with_store(readonly=True)
    async def go(store: Store) -> None:
        center = ConfigCenter(store)
        state = f"{name}: {await _main_state(center, name)}; {await _gray_state(center, name)}"
        console.print(printable(state), markup=False)
        clients, _ = await store.range(f"config-clients/{name}/")
        table = Table(title=f"{len(clients)} clients", title_justify="left")
        for column in ("client", "version", "gray", "md5"):
            table.add_column(column)
        for kv in clients:
            info = decode("config", kv.key, kv.value, ClientReport.decode)
            client = kv.key.rsplit("/", 1)[1]
            if isinstance(info, Rejected):
                report(info)
                table.add_row(cell(client), "malformed", "", "")
                continue
            row = (client, str(info.version), "yes" if info.gray else "", info.md5[:12])
            table.add_row(*map(cell, row))
        console.print(table)

    run(go())


async def _main_state(center: ConfigCenter, name: str) -> str:
    try:
        doc = await center.get(name)
    except MalformedConfigError:
        return "current record malformed ('keel config publish NAME FILE --force' repairs it)"
    return f"version {doc.version if doc else '-'}"


async def _gray_state(center: ConfigCenter, name: str) -> str:
    try:
        gray = await center.gray(name)
    except MalformedConfigError:
        return f"gray record malformed ('keel config abort {name}' ends it)"
    if gray is None:
        return "no gray release"
    return f"gray over version {gray.base_version}: {json.dumps(gray.rule.to_json())}"


def _event_line(name: str, event: Event) -> str:
    """One line for a watch event; a malformed record is said so (and reported)."""
    is_gray = event.kv.key == gray_key(name)
    kind = "gray" if is_gray else "main"
    if event.type is EventType.DELETE:
        return f"{kind} deleted rev={event.revision}"
    decoder: Callable[[bytes], ConfigDocument | GrayRelease] = (
        GrayRelease.decode if is_gray else ConfigDocument.decode
    )
    rec = decode("config", event.kv.key, event.kv.value, decoder)
    if isinstance(rec, Rejected):
        report(rec)
        return printable(f"{kind} malformed rev={event.revision} ({rec.reason})")
    version = rec.base_version if isinstance(rec, GrayRelease) else rec.version
    return printable(f"{kind} version={version} md5={rec.md5} rev={event.revision}")


@app.command("watch")
def watch_cmd(
    name: str,
    count: Annotated[int, typer.Option(help="Stop after this many changes (0: until Ctrl-C).")] = 0,
) -> None:
    """Print a line for each publish, gray change or delete of NAME."""

    @with_store(readonly=True)
    async def go(store: Store) -> None:
        seen = 0
        async with store.watch(current_key(name)) as main, store.watch(gray_key(name)) as gray:
            async for event, _ in merged([main, gray]):
                print(_event_line(name, event), flush=True)
                seen += 1
                if count and seen >= count:
                    return

    run(go())

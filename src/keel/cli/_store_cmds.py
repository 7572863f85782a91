"""``keel store ...``: read, write, list, watch and inspect the store directly.

Keys and values are shown escaped (:func:`~keel.cli._common.printable`) in
tables, watch lines and ``get`` on a terminal; ``get`` writes the raw bytes
when stdout is not a terminal, or with ``--raw``. Every read takes
``-o table|wide|json|yaml`` (:mod:`keel.cli._output`).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from keel.cli._common import (
    _PLAIN,
    MAX_INT64,
    cell,
    console,
    fail,
    parse_lease_id,
    printable,
    printable_bytes,
    run,
    state,
    with_store,
    write_bytes,
)
from keel.cli._output import JsonFlag, OutputOption, emit, emit_event, output_format

if TYPE_CHECKING:
    from keel.store import Event, KeyValue, LeaseInfo, Store

__all__ = ["app", "lease_app", "status_cmd"]

app = typer.Typer(help="Read and write keys, watch changes, manage leases.", no_args_is_help=True)
lease_app = typer.Typer(help="Grant, revoke and inspect leases.", no_args_is_help=True)
app.add_typer(lease_app, name="lease")


def _text(value: bytes, limit: int | None = None) -> str:
    """A value as escaped text for tables: UTF-8 if it decodes, else a byte count."""
    try:
        text = printable(value.decode("utf-8"))
    except UnicodeDecodeError:
        return f"<{len(value)} bytes binary>"
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def _record(kv: KeyValue) -> dict[str, object]:
    try:
        value: object = kv.value.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        value = base64.b64encode(kv.value).decode()
        encoding = "base64"
    return {
        "key": kv.key,
        "value": value,
        "encoding": encoding,
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


@app.command("get")
def get_cmd(
    key: Annotated[str, typer.Argument(metavar="KEY")],
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", metavar="FORMAT", help="json or yaml: print the whole record."
        ),
    ] = None,
    as_json: JsonFlag = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="Write the raw bytes, even to a terminal.")
    ] = False,
) -> None:
    """Print a key's value, or its whole record with -o json|yaml.

    To a terminal the value is shown as text with control characters escaped;
    to a pipe or a file (or with --raw) its bytes are written as they are.
    """

    @with_store(readonly=True)
    async def go(store: Store) -> KeyValue | None:
        return await store.get(key)

    kv = run(go())
    if kv is None:
        fail(f"key {key!r} not found: list keys with 'keel store ls'", code=1)
    if as_json or output is not None:
        fmt = output_format(output or "json", as_json)
        emit(fmt, _record(kv), lambda wide: _record_table(_record(kv)))
    elif raw or not sys.stdout.isatty():
        write_bytes(kv.value)
    else:
        print(printable_bytes(kv.value.removesuffix(b"\n")))


@app.command("put")
def put_cmd(
    key: str,
    value: Annotated[str | None, typer.Argument(help="The value; omit with --file.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", metavar="FILE", help="Read the value from a file ('-': stdin)."
        ),
    ] = None,
    lease: Annotated[
        str | None, typer.Option(metavar="ID", help="Attach the key to this lease id.")
    ] = None,
) -> None:
    """Set a key; print the new revision."""
    if (value is None) == (file is None):
        fail("give the value as an argument or with --file (exactly one of them)")
    if file is not None:
        data = sys.stdin.buffer.read() if str(file) == "-" else _read_file(file)
    else:
        data = _argument_bytes(value or "")
    lease_id = parse_lease_id(lease) if lease else None

    @with_store
    async def go(store: Store) -> int:
        return await store.put(key, data, lease=lease_id)

    console.print(f"revision {run(go())}")


def _record_table(record: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None)
    for name, value in record.items():
        table.add_row(Text(name, style="bold"), cell("" if value is None else str(value)))
    return table


def _argument_bytes(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        fail("the value argument is not valid UTF-8 text: pass binary values with --file")


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}; check the path")


@app.command("ls")
def ls_cmd(
    prefix: Annotated[str, typer.Argument(help="Key prefix ('' = everything).")] = "",
    limit: Annotated[
        int, typer.Option(min=0, max=MAX_INT64, help="At most this many keys (0 = all).")
    ] = 0,
    revision: Annotated[
        int, typer.Option(min=0, max=MAX_INT64, help="Read as of this past revision.")
    ] = 0,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """List keys under a prefix with their versions, revisions and leases."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> tuple[list[KeyValue], int]:
        return await store.range(prefix, limit=limit or None, revision=revision or None)

    kvs, rev = run(go())

    def table(wide: bool) -> Table:
        limit = None if wide or _PLAIN else 60
        t = Table(title=f"{_count(len(kvs), 'key')} at revision {rev}", title_justify="left")
        for column in ("key", "value", "version", "mod rev", "lease"):
            t.add_column(column, overflow="fold")
        for kv in kvs:
            lease_text = f"{kv.lease:x}" if kv.lease else ""
            t.add_row(
                cell(kv.key),
                Text(_text(kv.value, limit)),
                str(kv.version),
                str(kv.mod_revision),
                lease_text,
            )
        return t

    emit(fmt, [_record(kv) for kv in kvs], table)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@app.command("rm")
def rm_cmd(
    key: str,
    prefix: Annotated[bool, typer.Option("--prefix", help="Delete every key under KEY.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm deleting the whole namespace.")
    ] = False,
) -> None:
    """Delete a key (or a prefix); print how many were deleted."""
    if prefix and key == "" and not yes:
        fail("an empty prefix deletes every key of the namespace: add --yes if you mean it")

    @with_store
    async def go(store: Store) -> int:
        return await store.delete(key, prefix=prefix)

    console.print(f"deleted {run(go())}")


def _event_line(event: Event) -> str:
    from keel.store import EventType

    if event.type is EventType.PUT:
        value = _text(event.kv.value, None if _PLAIN else 200)
        key = printable(event.kv.key)
        return f"PUT {key} rev={event.revision} v{event.kv.version} {value}"
    return f"DELETE {printable(event.kv.key)} rev={event.revision}"


@app.command("watch")
def watch_cmd(
    key: Annotated[str, typer.Argument(metavar="KEY", help="Key or prefix to watch.")] = "",
    prefix: Annotated[bool, typer.Option("--prefix", help="Watch every key under KEY.")] = False,
    rev: Annotated[
        int,
        typer.Option("--rev", min=0, max=MAX_INT64, help="Replay from this revision (inclusive)."),
    ] = 0,
    count: Annotated[
        int, typer.Option(min=0, help="Stop after this many events (0 = run until Ctrl-C).")
    ] = 0,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Print changes as they happen, one line each (-o json: one object each), until Ctrl-C."""
    fmt = output_format(output, as_json)
    if key == "" and not prefix:
        prefix = True

    @with_store(readonly=True)
    async def go(store: Store) -> None:
        seen = 0
        async with store.watch(key, prefix=prefix, start_revision=rev or None) as events:
            async for event in events:
                record = {"type": event.type.name, "revision": event.revision, **_record(event.kv)}
                emit_event(fmt, record, _event_line(event))
                seen += 1
                if count and seen >= count:
                    return

    run(go())


@app.command("status")
def status_cmd(output: OutputOption = "table", as_json: JsonFlag = False) -> None:
    """Show which store this is (URL, where it came from), its backend, revision, keys, size.

    The URL comes from --store, else KEEL_STORE, else the default
    (sqlite://, the file .keel/keel.db under the working directory).
    """
    fmt = output_format(output, as_json)
    from keel.store import parse_url

    url = parse_url(state.url)
    path = Path(url.path).absolute() if url.scheme == "sqlite" else None

    @with_store(readonly=True)
    async def go(store: Store) -> dict[str, object]:
        s = await store.status()
        return {
            "url": url.redacted(),  # never the password
            "url_from": state.url_source,
            **({"path": str(path)} if path is not None else {}),
            "backend": s.backend,
            "endpoint": s.endpoint,
            "root": s.root,
            "revision": s.revision,
            "compact_revision": s.compact_revision,
            "keys": s.keys,
            "leases": s.leases,
            "size_bytes": s.size_bytes,
            **s.details,
        }

    info = run(go())
    emit(fmt, info, lambda wide: _record_table(info))


@app.command("compact")
def compact_cmd(
    revision: Annotated[int, typer.Argument(min=1, max=MAX_INT64, help="Compact up to here.")],
) -> None:
    """Forget history older than REVISION."""

    @with_store
    async def go(store: Store) -> None:
        await store.compact(revision)

    run(go())
    console.print(f"compacted at revision {revision}")


@lease_app.command("grant")
def lease_grant_cmd(
    ttl: Annotated[int, typer.Argument(min=1, help="Time to live in whole seconds.")],
    keepalive: Annotated[
        bool, typer.Option("--keepalive", help="Keep the lease alive until Ctrl-C, then revoke it.")
    ] = False,
) -> None:
    """Grant a lease; print its id."""

    @with_store
    async def go(store: Store) -> None:
        import asyncio

        lease = await store.grant(ttl)
        console.print(f"lease {lease.id} (hex {lease.id:x}) granted with TTL {lease.ttl}s")
        if not keepalive:
            return
        try:
            while True:
                await asyncio.sleep(max(0.2, ttl / 3))
                await store.keepalive(lease.id)
        finally:
            await store.revoke(lease.id)

    run(go())


@lease_app.command("revoke")
def lease_revoke_cmd(lease_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke a lease, deleting every key attached to it."""
    lid = parse_lease_id(lease_id)

    @with_store
    async def go(store: Store) -> None:
        await store.revoke(lid)

    run(go())
    console.print(f"lease {lid} revoked")


@lease_app.command("ttl")
def lease_ttl_cmd(
    lease_id: Annotated[str, typer.Argument(metavar="ID")],
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Show a lease's remaining TTL and its keys."""
    lid = parse_lease_id(lease_id)
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> LeaseInfo | None:
        return await store.time_to_live(lid)

    info = run(go())
    if info is None:
        fail(
            f"lease {lid} not found (expired or revoked): list leases with 'keel store lease ls'",
            code=1,
        )

    def table(wide: bool) -> Table:
        t = Table(
            title=f"lease {lid} (hex {lid:x}): {info.ttl}s left of {info.granted_ttl}s",
            title_justify="left",
        )
        t.add_column("key")
        for key in info.keys:
            t.add_row(cell(key))
        return t

    emit(fmt, _lease_record(lid, info), table)


def _lease_record(lid: int, info: LeaseInfo | None) -> dict[str, Any]:
    return {
        "id": lid,
        "hex": f"{lid:x}",
        "ttl": None if info is None else info.ttl,
        "granted_ttl": None if info is None else info.granted_ttl,
        "keys": [] if info is None else list(info.keys),
    }


@lease_app.command("ls")
def lease_ls_cmd(output: OutputOption = "table", as_json: JsonFlag = False) -> None:
    """List live leases: id, TTL left, granted TTL, number of keys attached."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> list[dict[str, Any]]:
        return [_lease_record(lid, await store.time_to_live(lid)) for lid in await store.leases()]

    records = run(go())

    def table(wide: bool) -> Table:
        t = Table(title=_count(len(records), "lease"), title_justify="left")
        for column in ("lease", "hex", "ttl", "granted", "keys"):
            t.add_column(column)
        for r in records:
            keys = r["keys"]
            shown = ", ".join(keys) if wide or _PLAIN else str(len(keys))
            t.add_row(str(r["id"]), r["hex"], f"{r['ttl']}s", f"{r['granted_ttl']}s", cell(shown))
        return t

    emit(fmt, records, table)

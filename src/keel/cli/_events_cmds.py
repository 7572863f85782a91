"""``keel events topics|groups|lag|tail|dead|replay|publish``.

The bus is the store (``--store``, the default) or the engine ``--events URL``
names (``KEEL_EVENTS``; ``redis://...`` for Redis Streams). ``keel.events`` is
imported when a command runs, not when the CLI starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import RenderableType
from rich.table import Table

from keel.cli._common import cell, console, fail, open_store, run
from keel.cli._output import JsonFlag, OutputOption, emit, emit_event, output_format

if TYPE_CHECKING:
    from keel.events import Bus, StoredEvent

__all__ = ["register"]

T = TypeVar("T")

events_app = typer.Typer(
    help="Events: topics, group lag, tail, dead letters, replay, publish.", no_args_is_help=True
)
_url: dict[str, str | None] = {"events": None}

TopicArg = Annotated[str, typer.Argument(metavar="TOPIC", help="The topic, e.g. orders.created.")]
LimitOption = Annotated[int, typer.Option("-n", "--limit", help="How many events, newest last.")]


@events_app.callback()
def events_cmd(
    events: Annotated[
        str | None,
        typer.Option(
            "--events",
            metavar="URL",
            help="The events engine: redis://host:port or a store URL (default: the store).",
        ),
    ] = None,
) -> None:
    """Events: topics, group lag, tail, dead letters, replay, publish."""
    _url["events"] = events or os.environ.get("KEEL_EVENTS") or None


def _with_bus(call: Callable[[Bus], Awaitable[T]], *, readonly: bool = True) -> T:
    async def go() -> T:
        import keel.events

        url = _url["events"]
        if url is not None:
            bus = await keel.events.connect(url)
            try:
                return await call(bus)
            finally:
                await bus.aclose()
        async with open_store(readonly=readonly) as store:
            return await call(keel.events.Bus(store))

    return run(go())


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ts else ""


def _event_dict(e: StoredEvent) -> dict[str, Any]:
    payload = e.payload
    if isinstance(payload, bytes):
        payload = {"bytes": payload.hex()}
    out = {"id": e.id, "key": e.key, "published_at": _when(e.published_at), "payload": payload}
    out["headers"] = e.headers
    if e.error is not None:
        out["error"] = e.error
    return out


def _event_table(title: str, events: list[StoredEvent], wide: bool, *, dead: bool = False) -> Table:
    t = Table(title=title, title_justify="left")
    columns = ["id", "published (UTC)", "key", "payload"]
    columns += ["group", "attempts", "error"] if dead else []
    for column in columns + (["headers"] if wide else []):
        t.add_column(column)
    for e in events:
        body = json.dumps(_event_dict(e)["payload"])
        row: list[RenderableType] = [
            cell(e.id),
            _when(e.published_at),
            cell(e.key or ""),
            cell(body if wide else body[:80]),
        ]
        if dead:
            h = e.headers
            error = h.get("keel-dead-error", e.error or "")
            row += [cell(h.get("keel-dead-group", "")), h.get("keel-dead-attempts", "")]
            row += [cell(error if wide else error[:60])]
        t.add_row(*row, *([cell(json.dumps(e.headers))] if wide else []))
    return t


@events_app.command("topics")
def topics_cmd(output: OutputOption = "table", as_json: JsonFlag = False) -> None:
    """List topics with their partitions and groups."""
    fmt = output_format(output, as_json)

    async def call(bus: Bus) -> list[dict[str, Any]]:
        rows = []
        for topic in await bus.topics():
            partitions = await bus.engine.partitions(topic)
            rows.append(
                {"topic": topic, "partitions": partitions, "groups": await bus.engine.groups(topic)}
            )
        return rows

    rows = _with_bus(call)

    def table(wide: bool) -> Table:
        t = Table(title=f"{len(rows)} topic{'' if len(rows) == 1 else 's'}", title_justify="left")
        for column in ("topic", "partitions", "groups"):
            t.add_column(column)
        for r in rows:
            t.add_row(cell(r["topic"]), str(r["partitions"]), cell(", ".join(r["groups"])))
        return t

    emit(fmt, rows, table)


def _lag_rows(topic: str | None) -> list[dict[str, Any]]:
    async def call(bus: Bus) -> list[dict[str, Any]]:
        topics = [topic] if topic is not None else await bus.topics()
        rows = []
        for name in topics:
            rows += [
                {
                    "topic": s.topic,
                    "group": s.group,
                    "pending": s.pending,
                    "undelivered": s.undelivered,
                    "partitions": [list(p) for p in s.by_partition],
                }
                for s in await bus.lag(name)
            ]
        return rows

    return _with_bus(call)


def _lag_emit(fmt: str, rows: list[dict[str, Any]]) -> None:
    def table(wide: bool) -> Table:
        t = Table(title=f"{len(rows)} group{'' if len(rows) == 1 else 's'}", title_justify="left")
        for column in ["topic", "group", "pending", "undelivered"] + (
            ["per partition"] if wide else []
        ):
            t.add_column(column)
        for r in rows:
            extra = [" ".join(f"{p}/{u}" for p, u in r["partitions"])] if wide else []
            t.add_row(
                cell(r["topic"]), cell(r["group"]), str(r["pending"]), str(r["undelivered"]), *extra
            )
        return t

    emit(fmt, rows, table)


@events_app.command("groups")
def groups_cmd(topic: TopicArg, output: OutputOption = "table", as_json: JsonFlag = False) -> None:
    """List a topic's groups with their pending and undelivered counts."""
    _lag_emit(output_format(output, as_json), _lag_rows(topic))


@events_app.command("lag")
def lag_cmd(
    topic: Annotated[
        str | None, typer.Argument(metavar="[TOPIC]", help="One topic (default: all).")
    ] = None,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Pending and undelivered events per group (of one topic, or of all)."""
    _lag_emit(output_format(output, as_json), _lag_rows(topic))


@events_app.command("tail")
def tail_cmd(
    topic: TopicArg,
    limit: LimitOption = 10,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new events.")
    ] = False,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Print the newest events of a topic (with -f, then new ones as they come)."""
    fmt = output_format(output, as_json)
    if limit < 0:
        fail(f"--limit must be >= 0, got {limit}")
    events = _with_bus(lambda bus: bus.read(topic, limit=limit))
    if not follow:
        emit(fmt, [_event_dict(e) for e in events], lambda wide: _event_table(topic, events, wide))
        return
    for e in events:
        _print_line(fmt, e)
    _with_bus(lambda bus: _follow(bus, topic, fmt))


def _print_line(fmt: str, e: StoredEvent) -> None:
    record = _event_dict(e)
    line = f"{e.id}  {record['published_at']}  {e.key or '-'}  {json.dumps(record['payload'])}"
    emit_event(fmt, record, cell(line).plain)


async def _follow(bus: Bus, topic: str, fmt: str) -> None:
    """Print new events of ``topic`` as they come, until interrupted."""
    import asyncio

    from keel.events._admin import read_after

    partitions = await bus.ensure_topic(topic)
    positions: dict[int, str] = {}
    for p in range(partitions):
        positions[p] = bus.engine.position_before(
            await bus.engine.id_at(topic, p, bus.clock.time())
        )
    while True:
        for e in await read_after(bus, topic, positions, limit=100):
            positions[e.partition] = e.entry_id
            _print_line(fmt, e)
        await asyncio.sleep(0.5)


@events_app.command("dead")
def dead_cmd(
    topic: TopicArg,
    limit: LimitOption = 20,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Print the dead letters of a topic (its events that failed every attempt)."""
    fmt = output_format(output, as_json)
    dead = f"{topic}.dead"

    async def call(bus: Bus) -> list[StoredEvent]:
        return await bus.read(dead, limit=limit) if dead in await bus.topics() else []

    events = _with_bus(call)
    emit(
        fmt,
        [_event_dict(e) for e in events],
        lambda wide: _event_table(dead, events, wide, dead=True),
    )


@events_app.command("replay")
def replay_cmd(
    topic: TopicArg,
    group: Annotated[str, typer.Option("--group", "-g", help="The group to rewind.")],
    from_id: Annotated[
        str | None, typer.Option("--from-id", help="Re-deliver from this event id.")
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option("--from-time", help="Re-deliver from this time (ISO 8601; UTC if no zone)."),
    ] = None,
) -> None:
    """Make a group re-deliver a topic's events from an event id or a time."""
    if (from_id is None) == (from_time is None):
        fail("give exactly one of --from-id ID and --from-time ISO-TIME")
    when = None
    if from_time is not None:
        try:
            parsed = datetime.fromisoformat(from_time)
        except ValueError:
            fail(f"--from-time {from_time!r} is not an ISO 8601 time: e.g. 2026-01-31T12:00:00Z")
        when = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    _with_bus(lambda bus: bus.replay(topic, group, from_id=from_id, from_time=when), readonly=False)
    console.print(cell(f"{topic}: group {group} rewound to {from_id or from_time}"))


@events_app.command("publish")
def publish_cmd(
    topic: TopicArg,
    payload: Annotated[
        str, typer.Argument(metavar="JSON", help="The payload as JSON, e.g. '{\"id\": 1}'.")
    ],
    key: Annotated[str | None, typer.Option("--key", "-k", help="The ordering key.")] = None,
) -> None:
    """Publish one event; print its id."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        fail(f"the payload is not JSON ({exc}): quote it, e.g. '{{\"id\": 1}}'")
    event_id = _with_bus(lambda bus: bus.publish(topic, data, key=key), readonly=False)
    print(event_id)


def register(app: typer.Typer) -> None:
    """Add ``keel events ...`` to the root app."""
    app.add_typer(events_app, name="events")

"""What ``keel up`` shows: the state folded from one watch, drawn to fit the terminal.

The panels come in the order a newcomer needs them: services with their health
(and request rates when the shop runs), jobs with their last runs, sagas (when
there are any), locks and leaders, and a tail of changes. They share the rows
the terminal has; on a larger terminal each shows more, and configs, leases
and keys by area are added below when there is room (beside each other from
160 columns on). The store's summary is one header line. Every record is decoded through its own
decoder (:func:`keel._records.decode`): a malformed one is skipped and
counted, never drawn; store text is escaped before it reaches the terminal.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from keel._records import Rejected, decode, report
from keel.cli._common import cell, printable
from keel.cli._up_edge import GATEWAY_CONFIG, ConsoleWatch, route_summary
from keel.cli._up_events import COLUMNS as EVENT_COLUMNS
from keel.cli._up_events import WIDTHS as EVENT_WIDTHS
from keel.cli._up_events import event_rows
from keel.cli._up_fmt import LEGEND, count, duration, size, sparkline
from keel.cli._up_sagas import COLUMNS, PREFIX, WIDTHS, decode_saga, saga_rows, saga_title
from keel.cli._up_shop import ShopWatch
from keel.config import Canary, ConfigDocument
from keel.coord import group_lines
from keel.coord._inspect import KINDS
from keel.events import GroupStats
from keel.registry import HealthMark, Instance, decode_health_mark, decode_instance
from keel.saga import SagaRecord
from keel.schedule import Execution, JobView
from keel.store import Event, EventType, KeyValue, LeaseInfo, StoreStatus, redact_url

__all__ = ["Panel", "UpView", "area_of", "fit_rows"]

T = TypeVar("T")
TAIL = 12
_WIDE = 160
_ROOMY = 30  # rows from which the hint line is worth its row
_REGISTRY_AREA = "registry"


def area_of(key: str) -> str:
    """The area of a key: its first path segment (``services/orders/1`` → ``services``)."""
    head, sep, _ = key.partition("/")
    return head if sep else "(top)"


@dataclass
class Panel:
    """One titled table: its columns and rows (cells already escaped)."""

    title: str
    columns: Sequence[str]
    rows: list[list[Text | str]]
    keep: int = 1
    """Rows it gets before the panels after it get more than one."""
    widths: Sequence[int | None] = ()
    """Each column's width: a number is its width, ``None`` shares the rest."""
    more: bool = True
    """Say how many rows are not shown (a tail does not)."""

    def lines(self, shown: int) -> int:
        """Terminal lines it takes showing ``shown`` rows (title, header, rows)."""
        return 1 + (1 + shown if self.rows else 0)

    def render(self, shown: int, width: int) -> RenderableType:
        """The panel in ``width`` columns with at most ``shown`` rows (a line says how many
        more there are)."""
        title = Text(self.title, style="bold", no_wrap=True, overflow="ellipsis")
        if not self.rows:
            return Text.assemble(title, ("  none yet", "dim"))
        if shown <= 0:  # no room for a row: the title says how many (one line, not three)
            return Text.assemble(title, (f"  {len(self.rows)} not shown", "dim"))
        table = Table(box=None, show_header=True, header_style="dim", pad_edge=False)
        fixed = [*self.widths, *[None] * len(self.columns)][: len(self.columns)]
        flexible = fixed.count(None) or 1
        room = width - sum(w or 0 for w in fixed) - 2 * (len(fixed) - 1)
        share = max(4, room // flexible)
        for column, wide in zip(self.columns, fixed, strict=True):
            table.add_column(
                column, overflow="ellipsis", no_wrap=True, width=wide, max_width=wide or share
            )
        if len(self.rows) <= shown or not self.more:
            for row in self.rows[:shown]:
                table.add_row(*row)
            return Group(title, table)
        for row in self.rows[: max(0, shown - 1)]:
            table.add_row(*row)
        more = Text(f"… {len(self.rows) - max(0, shown - 1)} more", style="dim")
        return Group(title, table, more)


def lateness(run: Execution) -> float:
    """How long after its fire (or due) time a run started (0 for manual runs, early starts)."""
    if run.started_at is None or run.kind == "manual":
        return 0.0
    return max(0.0, run.started_at - run.fire)


def fit_rows(wants: Sequence[int], budget: int, keep: Sequence[int] = ()) -> list[int]:
    """Share ``budget`` rows among panels wanting ``wants``.

    First each panel in turn gets up to its ``keep`` rows (earlier panels
    first: with little room the first panels show what they have), then the
    rest is handed out one row each in turn.
    """
    given = [0] * len(wants)
    for i, want in enumerate(wants):
        first = min(want, keep[i] if i < len(keep) else 1, budget)
        given[i] = first
        budget -= first
    while budget > 0 and any(g < w for g, w in zip(given, wants, strict=True)):
        for i, want in enumerate(wants):
            if budget > 0 and given[i] < want:
                given[i] += 1
                budget -= 1
    return given


@dataclass
class UpView:
    """What ``keel up`` shows; updated from the watch, drawn by :meth:`render`."""

    url: str
    shop: ShopWatch | None = None
    console_watch: ConsoleWatch | None = None
    keys: dict[str, str] = field(default_factory=dict)
    services: dict[str, Instance] = field(default_factory=dict)
    health: dict[str, HealthMark] = field(default_factory=dict)
    configs: dict[str, ConfigDocument] = field(default_factory=dict)
    gray: set[str] = field(default_factory=set)
    canaries: dict[str, Canary] = field(default_factory=dict)
    coord: dict[str, KeyValue] = field(default_factory=dict)
    sagas: dict[str, SagaRecord] = field(default_factory=dict)
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=TAIL))
    event_count: int = 0
    status: StoreStatus | None = None
    leases: list[LeaseInfo] = field(default_factory=list)
    jobs: list[JobView] = field(default_factory=list)
    event_lag: list[GroupStats] = field(default_factory=list)
    orders_counted: int | None = None
    started: float = field(default_factory=time.monotonic)
    roomy: bool = True

    def load(self, kvs: list[KeyValue]) -> None:
        """Seed the view from the initial listing."""
        for kv in kvs:
            self._put(kv)

    def apply(self, event: Event) -> None:
        """Fold one watch event into the view."""
        key = event.kv.key
        if event.type is EventType.PUT:
            self._put(event.kv)
        else:
            indexes = (self.keys, self.services, self.health, self.configs, self.coord, self.sagas)
            self.canaries.pop(key, None)
            for index in indexes:
                index.pop(key, None)
            self.gray.discard(key)
        self.events.append(event)
        self.event_count += 1

    def _put(self, kv: KeyValue) -> None:
        key = kv.key
        self.keys[key] = area_of(key)
        if key.startswith("services/"):
            _index(
                self.services, key, decode(_REGISTRY_AREA, key, kv.value, _of(decode_instance, key))
            )
        elif key.startswith("health/"):
            _index(self.health, key, decode("health", key, kv.value, _of(decode_health_mark, key)))
        elif key.startswith("config/"):
            _index(self.configs, key, decode("config", key, kv.value, ConfigDocument.decode))
        elif key.startswith("config-gray/"):
            self.gray.add(key)
        elif key.startswith("config-canary/"):
            _index(self.canaries, key, decode("config", key, kv.value, Canary.decode))
        elif key.startswith(PREFIX):
            _index(self.sagas, key, decode("saga", key, kv.value, decode_saga))
        elif key.startswith(tuple(KINDS)):
            self.coord[key] = kv

    # -- the panels ---------------------------------------------------------

    def service_panel(self) -> Panel:
        """Services with their health and, with the shop, request rates."""
        rates = self.shop.rates if self.shop is not None else {}
        failing = self.shop.error_rates if self.shop is not None else {}
        rows: list[list[Text | str]] = []
        for _key, inst in sorted(self.services.items()):
            mark = self.health.get(f"health/{inst.service}/{inst.id}")
            health = (
                "failing"
                if mark is not None and mark.failing
                else "checked"
                if inst.check
                else "lease"
            )
            style = "red" if health == "failing" else ""
            series = rates.get(inst.service, ())
            rate = f"{series[-1]:.1f}/s {sparkline(series, 8)}" if series else ""
            bad = failing.get(inst.service, ())
            errors = (
                Text(f"{bad[-1]:.1f} {sparkline(bad, 4)}", style="red" if any(bad) else "dim")
                if bad
                else ""
            )
            rows.append(
                [
                    cell(inst.service),
                    cell(inst.url),
                    cell(inst.status),
                    Text(health, style=style),
                    rate,
                    errors,
                ]
            )
        title = f"services · {count(len(self.services), 'instance')}"
        columns = ("service", "url", "status", "health", "requests", "5xx/s")
        return Panel(title, columns, rows, keep=8, widths=(None, 22, 6, 7, 14, 8))

    def job_panel(self) -> Panel:
        """Jobs, their next fire, their last run and a sparkline of recent durations."""
        rows: list[list[Text | str]] = []
        for job in self.jobs:
            every = job.definition.trigger.get("interval_s")
            trigger = (
                f"every {duration(float(every))}"
                if isinstance(every, int | float) and every
                else ""
            )
            if not trigger:
                shown = {k: v for k, v in job.definition.trigger.items() if v not in (None, 0, 0.0)}
                trigger = ", ".join(f"{k}={v}" for k, v in shown.items()) or "manual"
            last = next((r for r in job.recent if r.status.final), None)
            took = [r.duration_s for r in reversed(job.recent) if r.duration_s is not None]
            late = [lateness(r) for r in reversed(job.recent) if r.started_at is not None]
            rows.append(
                [
                    cell(job.definition.name),
                    cell(trigger),
                    job.next_fire.strftime("%H:%M:%S") if job.next_fire else "",
                    cell(last.status.value) if last is not None else "",
                    duration(took[-1]) if took else "",
                    sparkline(took, 6),
                    duration(late[-1]) if late else "",
                    count(len(job.workers), "worker") if job.workers else "no worker",
                ]
            )
        columns = ("job", "trigger", "next", "last run", "took", "recent", "late", "workers")
        return Panel(
            f"jobs · {count(len(self.jobs), 'job')}",
            columns,
            rows,
            keep=4,
            widths=(None, None, 8, 9, 6, 6, 6, 9),
        )

    def saga_panel(self) -> Panel:
        """Sagas in progress, then the latest outcomes (shown once there are any)."""
        return Panel(saga_title(self.sagas), COLUMNS, saga_rows(self.sagas), keep=3, widths=WIDTHS)

    def events_panel(self) -> Panel:
        """Consumer groups per topic: pending (delivered, not acked) and behind (not delivered)."""
        topics = len({s.topic for s in self.event_lag})
        title = f"events · {count(topics, 'topic')}"
        if self.orders_counted is not None:
            title += f" · analytics counted {count(self.orders_counted, 'order')}"
        return Panel(title, EVENT_COLUMNS, event_rows(self.event_lag), keep=2, widths=EVENT_WIDTHS)

    def coord_panel(self) -> Panel:
        """Locks and leaders with their fencing tokens."""
        rows: list[list[Text | str]] = []
        lines = group_lines(self.coord.values())
        for line in lines:
            owner = line.owner
            shown = ""
            if owner is not None:
                shown = (
                    printable(owner.value[:60].decode("utf-8", "replace"))
                    or f"lease {owner.lease:x}"
                )
            rows.append(
                [
                    line.kind,
                    cell(line.name),
                    Text(shown),
                    str(line.fencing_token),
                    str(line.waiters),
                ]
            )
        columns = ("kind", "name", "owner / leader", "token", "waiting")
        return Panel(
            f"locks and leaders · {len(lines)}", columns, rows, keep=4, widths=(9, None, None, 6, 7)
        )

    def tail_panel(self) -> Panel:
        """The latest changes, newest last."""
        rows: list[list[Text | str]] = []
        for ev in list(self.events):
            put = ev.type is EventType.PUT
            value = ev.kv.value[:80].decode("utf-8", "replace") if put else ""
            kind = Text(ev.type.value, style="green" if put else "red")
            rows.append([str(ev.revision), kind, cell(ev.kv.key), cell(value)])
        rows = rows[::-1]  # newest first, so a short panel shows the latest
        columns = ("rev", "type", "key", "value")
        return Panel(
            "recent changes (newest first)", columns, rows, widths=(7, 6, None, None), more=False
        )

    def extra_panels(self) -> list[Panel]:
        """Shown when there is room: configs, leases, keys by area."""
        configs: list[list[Text | str]] = []
        for key, doc in sorted(self.configs.items()):
            gray = "yes" if f"config-gray/{key.removeprefix('config/')}" in self.gray else ""
            canary = self.canaries.get(f"config-canary/{doc.name}")
            if gray and canary is not None and canary.status == "running":
                gray = f"canary {canary.step + 1}/{len(canary.analysis.steps)} {canary.percent:g}%"
            configs.append(
                [cell(doc.name), str(doc.version), cell(doc.format), cell(doc.author), gray]
            )
        leases: list[list[Text | str]] = [
            [
                f"{info.id:x}",
                f"{duration(info.ttl)} of {duration(info.granted_ttl)}",
                cell(", ".join(info.keys[:3])),
            ]
            for info in self.leases
        ]
        areas: list[list[Text | str]] = [
            [cell(area), str(n)] for area, n in sorted(Counter(self.keys.values()).items())
        ]
        return [
            Panel("configs", ("config", "version", "format", "author", "gray"), configs),
            Panel("leases", ("lease", "ttl left", "keys"), leases, widths=(14, 12)),
            Panel("keys by area", ("area", "keys"), areas),
        ]

    # -- the screen ---------------------------------------------------------

    def header(self) -> list[Text]:
        """The summary line, the banner (where the shop is, what to try), problems, a hint."""
        s = self.status
        line = Text.assemble(("keel up", "bold"))
        if s is not None:
            on_disk = f" · {size(s.size_bytes)}" if s.size_bytes is not None else ""
            up = duration(time.monotonic() - self.started)
            line.append(
                f"  rev {s.revision} · {count(s.keys, 'key')} · {count(s.leases, 'lease')}{on_disk}"
                f" · {count(self.event_count, 'change')} seen · up {up}"
            )
        line.append("  store ")
        line.append(printable(redact_url(self.url)), style="cyan")
        lines = [line]
        shop = self.shop
        if shop is not None and shop.state != "off":
            lines.append(Text.assemble(("shop ", "bold"), (shop.url, "cyan"), f" ({shop.state})"))
            lines.extend(Text(f"! {p}", style="red") for p in shop.problems)
        lines.extend(self.edges())
        if self.roomy:
            lines.append(Text("Ctrl-C to stop · keel up --help explains the columns", style="dim"))
        for text in lines:
            text.no_wrap = True
            text.overflow = "ellipsis"
        if shop is not None and shop.state == "up":
            lines[1].append("  try:")
            lines.insert(2, Text(f"  {shop.try_line()}", no_wrap=True, overflow="ellipsis"))
        return lines

    def edges(self) -> list[Text]:
        """The gateway's routes and where the console is (with how to make its first user)."""
        lines = []
        routes = route_summary(self.configs.get(f"config/{GATEWAY_CONFIG}"))
        shop_up = self.shop is not None and self.shop.state == "up"
        if routes is not None and shop_up and self.roomy:
            lines.append(Text.assemble(("gateway ", "bold"), printable(routes)))
        watch = self.console_watch
        if watch is not None and watch.problem:
            lines.append(Text(f"! {watch.problem}", style="red"))
        elif watch is not None and watch.url:
            line = Text.assemble(("console ", "bold"), (watch.url, "cyan"))
            if watch.hint:
                line.append("  first user: keel console adduser NAME --role admin")
            lines.append(line)
        return lines

    def render(self, width: int = 80, height: int = 24, *, columns: int = 0) -> RenderableType:
        """The whole screen, fitted to ``width`` x ``height``.

        ``columns``: panels side by side (0: two from 160 columns on, else one).
        """
        self.roomy = height >= _ROOMY
        head = self.header()
        budget = height - len(head)
        main = [self.service_panel(), self.job_panel(), self.coord_panel(), self.tail_panel()]
        if self.sagas:
            main.insert(2, self.saga_panel())
        more = self.extra_panels()
        if self.event_lag:  # a main panel when there is room, else first of the extras
            events = self.events_panel()
            if self.roomy:
                main.insert(-1, events)
            else:
                more.insert(0, events)
        columns = columns or (2 if width >= _WIDE else 1)
        groups = _pairs(main, columns)
        extras = _pairs(more, columns)
        return Group(*head, *_fit(groups, extras, budget, width))


def _fit(
    main: list[list[Panel]], extras: list[list[Panel]], budget: int, width: int
) -> list[RenderableType]:
    """Lay out groups of panels (side by side within a group) in ``budget`` lines."""
    overhead = [max(p.lines(0) for p in g) for g in main]
    wants = [max(len(p.rows) for p in g) for g in main]
    keep = [max(p.keep for p in g) for g in main]
    rows = fit_rows(wants, max(0, budget - sum(overhead)), keep)
    out: list[RenderableType] = []
    used = 0
    for group, shown in zip(main, rows, strict=True):
        out.append(_side_by_side(group, shown, width))
        used += max(p.lines(shown) for p in group)
    for group in extras:
        room = budget - used
        want = max(p.lines(len(p.rows)) for p in group)
        if room < 4:
            break
        shown = min(want, room) - 2
        out.append(_side_by_side(group, shown, width))
        used += max(p.lines(shown) for p in group)
    legend = sum(-(-len(line) // max(1, width)) for line in LEGEND)
    if budget - used >= legend + 1:
        out.append(Text("\n".join(LEGEND), style="dim"))
    return out


def _side_by_side(group: list[Panel], shown: int, width: int) -> RenderableType:
    if len(group) == 1:
        return group[0].render(shown, width)
    each = (width - 2 * (len(group) - 1)) // len(group)
    grid = Table.grid(padding=(0, 2))
    for _ in group:
        grid.add_column(width=each, no_wrap=True)
    grid.add_row(*(p.render(shown, each) for p in group))
    return grid


def _pairs(panels: list[Panel], columns: int) -> list[list[Panel]]:
    return [panels[i : i + columns] for i in range(0, len(panels), columns)]


def _of(decoder: Callable[[str, bytes], T], key: str) -> Callable[[bytes], T]:
    return lambda value: decoder(key, value)


def _index(index: dict[str, T], key: str, decoded: T | Rejected) -> None:
    if isinstance(decoded, Rejected):
        report(decoded)
        index.pop(key, None)
    else:
        index[key] = decoded

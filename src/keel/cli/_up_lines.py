"""``keel up`` without a terminal: one plain status line per change.

Piped to a file, run by a service manager or in CI, ``keel up`` has no screen
to redraw. It prints instead one line, stamped with the time, whenever a fact
the view would show changes: the store it opened, where the shop is and how
it fares, a service appearing, going or changing health, a job's last run, a
lock's or election's owner, the sagas' counts, a problem. Store text is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from keel.cli._common import printable
from keel.cli._up_fmt import count, duration
from keel.cli._up_sagas import saga_counts
from keel.cli._up_view import UpView
from keel.coord import group_lines
from keel.store import redact_url

__all__ = ["PlainLines", "facts"]

_HELD = ("lock ", "semaphore ", "rwlock ", "election ")


def facts(view: UpView) -> dict[str, str]:
    """What the view shows, as one line per thing (keyed by the thing)."""
    out = {"store": f"store {printable(redact_url(view.url))}"}
    shop = view.shop
    if shop is not None and shop.state != "off":
        out["shop"] = f"shop {shop.url} {shop.state}"
        if shop.state == "up":
            out["shop"] += f"; try: {shop.try_line()}"
        for problem in shop.problems:
            out[f"problem {problem}"] = f"problem: {problem}"
    for text in view.edges():  # the gateway's routes, the console (or why it is not up)
        out[f"edge {text.plain.split(' ', 1)[0]}"] = text.plain
    for inst in view.services.values():
        mark = view.health.get(f"health/{inst.service}/{inst.id}")
        health = (
            "failing" if mark is not None and mark.failing else "checked" if inst.check else "lease"
        )
        out[f"service {inst.service}/{inst.id}"] = printable(
            f"service {inst.service} {inst.id} {inst.url} {inst.status} ({health})"
        )
    for job in view.jobs:
        name = printable(job.definition.name)
        last = next((r for r in job.recent if r.status.final), None)
        if last is None:
            out[f"job {name}"] = f"job {name}: no run yet"
        else:
            took = f", took {duration(last.duration_s)}" if last.duration_s is not None else ""
            out[f"job {name}"] = f"job {name}: last run {last.status.value}{took}"
    if view.sagas:
        out["sagas"] = f"sagas: {saga_counts(view.sagas)}"
    for g in view.event_lag:
        out[f"events {g.topic}/{g.group}"] = printable(
            f"events {g.topic} group {g.group}: {g.pending} pending, {g.undelivered} behind"
        )
    if view.orders_counted is not None:
        out["analytics"] = f"analytics counted {count(view.orders_counted, 'order')}"
    for line in group_lines(view.coord.values()):
        owner = line.owner
        who = printable(owner.value[:60].decode("utf-8", "replace")) if owner is not None else ""
        state = f"held by {who or 'a session'} (token {line.fencing_token})" if owner else "free"
        out[f"{line.kind} {line.name}"] = printable(f"{line.kind} {line.name}: {state}")
    return out


class PlainLines:
    """Remembers what was printed, so each call prints only what changed."""

    def __init__(self) -> None:
        self._shown: dict[str, str] = {}

    def changes(self, view: UpView) -> Iterator[str]:
        """The lines to print for what changed since the last call, time-stamped."""
        now = time.strftime("%H:%M:%S")
        current = facts(view)
        for key, text in current.items():
            if self._shown.get(key) != text:
                yield f"{now} {text}"
        for key in self._shown.keys() - current.keys():
            if not key.startswith("problem "):
                gone = "free" if key.startswith(_HELD) else "gone"
                yield f"{now} {printable(key)}: {gone}"
        self._shown = current

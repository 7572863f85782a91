"""``keel config status`` (version, gray, canary step, clients per version, evaluations) and
``keel config controller`` (run the elected canary controller)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from keel.cli._common import cell, console, fail, printable, run, with_store
from keel.cli._output import JsonFlag, OutputOption, emit, output_format

if TYPE_CHECKING:
    from rich.console import Group

    from keel.config import Analysis, Canary, ConfigCenter
    from keel.store import Store

__all__ = ["controller_cmd", "load_analysis", "status_cmd"]


def load_analysis(path: Path) -> Analysis:
    """Read an analysis file (YAML or JSON); exit 2 naming the problem when it is bad."""
    from keel.config import Analysis, parse
    from keel.errors import ValidationError

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}; give a readable analysis file (YAML or JSON)")
    try:
        return Analysis.from_json(parse("yaml", text, name=str(path)))
    except ValidationError as exc:
        fail(f"{path}: {exc} (see 'Canary analysis' in docs/config.md)")


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M:%S") if epoch else ""


async def _clients(store: Store, name: str) -> list[dict[str, Any]]:
    from keel._records import Rejected, decode, report
    from keel.config import ClientReport

    out: list[dict[str, Any]] = []
    kvs, _ = await store.range(f"config-clients/{name}/")
    for kv in kvs:
        info = decode("config", kv.key, kv.value, ClientReport.decode)
        client = kv.key.rsplit("/", 1)[1]
        if isinstance(info, Rejected):
            report(info)
            out.append({"client": client, "malformed": True})
            continue
        record: dict[str, Any] = {
            "client": client,
            "version": info.version,
            "gray": info.gray,
            "md5": info.md5,
        }
        if info.healthy is not None:
            record.update(
                healthy=info.healthy, errors=info.errors, requests=info.requests, detail=info.detail
            )
        out.append(record)
    return out


def _canary_record(canary: Canary | None) -> dict[str, Any] | None:
    if canary is None:
        return None
    return {
        "status": canary.status,
        "step": canary.step + 1,
        "steps": len(canary.analysis.steps),
        "percent": canary.percent,
        "step_started_at": canary.step_started_at,
        "deadline_at": canary.deadline_at,
        "evaluations": [e.to_json() for e in canary.evaluations],
        "decisions": [d.to_json() for d in canary.decisions],
    }


async def _canary_state(center: ConfigCenter, name: str) -> dict[str, Any] | None:
    from keel.config import MalformedConfigError

    try:
        return _canary_record(await center.canary(name))
    except MalformedConfigError as exc:
        return {"status": "malformed", "error": str(exc)}


def status_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Show the main version, the gray rule, the canary's step and evaluations, and which
    clients run what (with their health)."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> dict[str, Any]:
        from keel.cli._config_cmds import _center, _gray_state, _main_state

        center = _center(store)
        clients = await _clients(store, name)
        main, gray = await _main_state(center, name), await _gray_state(center, name)
        canary = await _canary_state(center, name)
        versions = Counter(
            f"{c['version']}{' gray' if c['gray'] else ''}" for c in clients if "version" in c
        )
        return {
            "name": name,
            "main": main,
            "gray": gray,
            "canary": canary,
            "versions": dict(versions),
            "clients": clients,
        }

    info = run(go())
    emit(fmt, info, lambda wide: _table(info, wide))


def _table(info: dict[str, Any], wide: bool) -> Group:
    from rich.console import Group
    from rich.text import Text

    t = Table(title=f"{len(info['clients'])} clients", title_justify="left")
    for column in ("client", "version", "gray", "health", "errors/requests", "md5"):
        t.add_column(column)
    for c in info["clients"]:
        if c.get("malformed"):
            t.add_row(cell(c["client"]), "malformed", "", "", "", "")
            continue
        md5 = c["md5"] if wide else c["md5"][:12]
        health = "" if "healthy" not in c else ("ok" if c["healthy"] else f"FAIL {c['detail']}")
        counts = f"{c['errors']}/{c['requests']}" if "healthy" in c else ""
        row = (c["client"], str(c["version"]), "yes" if c["gray"] else "", health, counts, md5)
        t.add_row(*map(cell, row))
    parts: list[Any] = [Text(printable(f"{info['name']}: {info['main']}; {info['gray']}"))]
    per_version = ", ".join(f"{v}: {n}" for v, n in sorted(info["versions"].items()))
    if per_version:
        parts.append(Text(printable(f"clients per version: {per_version}")))
    canary = info["canary"]
    if canary is not None:
        parts.extend(_canary_lines(canary))
    return Group(*parts, t)


def _canary_lines(canary: dict[str, Any]) -> list[Any]:
    from rich.text import Text

    if canary["status"] == "malformed":
        return [Text(printable(f"canary: {canary['error']}"))]
    head = (
        f"canary {canary['status']}: step {canary['step']}/{canary['steps']} at "
        f"{canary['percent']:g}%, deadline {_when(canary['deadline_at'])} UTC"
    )
    lines = [Text(printable(head))]
    for e in canary["evaluations"][-5:]:
        why = "; ".join(e["reasons"])
        lines.append(Text(printable(f"  {_when(e['at'])} step {e['step'] + 1} {e['kind']}: {why}")))
    for d in canary["decisions"][-5:]:
        why = "; ".join(d["reasons"])
        line = f"  decision {_when(d['at'])} {d['kind']} by {d['by']}: {why}"
        lines.append(Text(printable(line)))
    return lines


def controller_cmd(
    node: Annotated[str, typer.Option(help="This controller's name (default: host-pid).")] = "",
    tick: Annotated[float, typer.Option(help="Seconds between looks for due evaluations.")] = 1.0,
) -> None:
    """Run the canary controller (one leads per store; others stand by) until Ctrl-C."""
    import os
    import socket

    if not 0.05 <= tick <= 60:
        fail(f"--tick {tick}: use 0.05-60 seconds")
    name = node or f"{socket.gethostname()}-{os.getpid()}"

    @with_store
    async def go(store: Store) -> None:
        from keel.config import CanaryController
        from keel.coord import Session

        console.print(f"canary controller {name} running (Ctrl-C stops it)")
        while True:  # a lost session ends one run; campaign again on a new one
            async with Session(store, ttl_s=10) as session:
                await CanaryController(session, node=name, tick_s=tick).run()
            console.print(f"canary controller {name}: session lost; campaigning again")

    run(go())

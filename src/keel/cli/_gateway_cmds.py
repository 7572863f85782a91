"""``keel gateway [run]``, ``keel gateway routes``, ``check FILE`` and ``keys``.

``keel gateway`` (or ``keel gateway run``) serves the API gateway, its routes
followed live from the config center; ``routes`` prints the routes of the
published document; ``check`` validates a document without publishing it
(exit 2 and one line when it is invalid). ``keys`` manages API keys
(:mod:`keel.cli._gateway_keys`). ``keel.gateway`` is imported when a command
runs, not when the CLI starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import RenderableType
from rich.table import Table

from keel.cli._common import EXIT_NOT_FOUND, cell, console, fail, run, state, with_store
from keel.cli._output import JsonFlag, OutputOption, emit, output_format

if TYPE_CHECKING:
    from keel.gateway import Route
    from keel.store import Store

__all__ = ["register"]

gateway_app = typer.Typer(
    help="API gateway: serve it, list its routes, check a route document, manage API keys.",
    invoke_without_command=True,
    no_args_is_help=False,
)

ConfigOption = Annotated[
    str, typer.Option("--config", metavar="NAME", help="Config-center name of the route document.")
]


PortOption = Annotated[int, typer.Option(min=0, max=65535, help="Port to bind (0: any free port).")]
HostOption = Annotated[str, typer.Option(help="Address to bind (0.0.0.0: every interface).")]
NameOption = Annotated[str, typer.Option(help="Service name the gateway registers as.")]
RedisOption = Annotated[
    str | None,
    typer.Option(envvar="KEEL_GATEWAY_REDIS", metavar="URL", help="Redis for shared rate limits."),
]
AccessLogOption = Annotated[
    bool,
    typer.Option("--access-log/--no-access-log", help="One JSON line per request on stdout."),
]
LevelOption = Annotated[str, typer.Option(help="DEBUG, INFO, WARNING...")]
ConsoleLogsOption = Annotated[
    bool, typer.Option("--console-logs", help="Human-readable logs instead of JSON.")
]
OtlpOption = Annotated[
    str | None, typer.Option(envvar="OTEL_EXPORTER_OTLP_ENDPOINT", help="Export spans here.")
]


@gateway_app.callback()
def gateway_cmd(
    ctx: typer.Context,
    config: ConfigOption = "gateway.yaml",
    port: PortOption = 8000,
    host: HostOption = "127.0.0.1",
    name: NameOption = "gateway",
    redis_url: RedisOption = None,
    access_log: AccessLogOption = True,
    log_level: LevelOption = "INFO",
    console_logs: ConsoleLogsOption = False,
    otlp_endpoint: OtlpOption = None,
) -> None:
    """Serve the gateway (without a subcommand, or with ``run``): routes followed live from the
    config center, /healthz /readyz /metrics, drain on SIGTERM."""
    if ctx.invoked_subcommand is not None and ctx.invoked_subcommand != "run":
        return
    from keel.cli._service_cmds import _use_uvloop
    from keel.errors import ValidationError
    from keel.gateway import AccessLog, Gateway
    from keel.observe import setup

    try:
        gateway = Gateway(
            state.url,
            config=config,
            host=host,
            port=port,
            redis_url=redis_url,
            name=name,
            access_log=AccessLog(enabled=access_log, stream=sys.stdout, service=name),
        )
    except ValidationError as exc:
        fail(str(exc))
    setup(name, level=log_level, json_logs=not console_logs, otlp_endpoint=otlp_endpoint)
    _use_uvloop()
    run(gateway.serve())


@gateway_app.command("run")
def run_cmd() -> None:
    """Serve the gateway (the same as ``keel gateway``; options go before ``run``)."""


def route_row(route: Route) -> dict[str, Any]:
    """One route as plain data for ``keel gateway routes``."""
    m = route.match
    if route.forward is not None:
        f = route.forward
        to = f"service {f.service}" if f.service else f"url {f.url}"
        if f.split:
            to += " split " + " ".join(f"{s.weight}:{_share(s)}" for s in f.split)
    elif route.redirect is not None:
        to = f"redirect {route.redirect.status} {route.redirect.location}"
    else:
        assert route.respond is not None
        to = f"respond {route.respond.status}"
    auth = None
    if route.auth is not None:
        kinds = [f"jwt:{route.auth.jwt}"] if route.auth.jwt else []
        kinds += ["api_key"] if route.auth.api_key else []
        auth = " ".join(kinds) + ("" if route.auth.required else " (optional)")
    return {
        "id": route.id,
        "priority": route.priority,
        "hosts": list(m.hosts),
        "path": m.path,
        "methods": list(m.methods),
        "headers": dict(m.headers),
        "action": route.action,
        "to": to,
        "auth": auth,
        "limits": route.limits.model_dump(exclude_defaults=True) if route.limits else None,
    }


def _share(split: Any) -> str:
    labels = ",".join(f"{k}={v}" for k, v in split.labels.items())
    return str(split.version or labels or "*")


def _routes_table(rows: list[dict[str, Any]], wide: bool) -> RenderableType:
    table = Table(box=None, pad_edge=False)
    columns = ["ID", "PRI", "HOSTS", "PATH", "METHODS", "HEADERS", "TO", "AUTH"]
    for column in [*columns, "LIMITS"] if wide else columns:
        table.add_column(column)
    for r in rows:
        headers = " ".join(f"{k}={v}" for k, v in r["headers"].items())
        table.add_row(
            cell(r["id"]),
            str(r["priority"]),
            cell(",".join(r["hosts"]) or "*"),
            cell(r["path"]),
            ",".join(r["methods"]) or "*",
            cell(headers),
            cell(r["to"]),
            cell(r["auth"] or ""),
            *([cell(json.dumps(r["limits"]) if r["limits"] else "")] if wide else []),
        )
    return table


@gateway_app.command("routes")
def routes_cmd(
    config: ConfigOption = "gateway.yaml", output: OutputOption = "table", as_json: JsonFlag = False
) -> None:
    """The routes of the published route document, in document order."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> tuple[int, list[dict[str, Any]]]:
        from keel.config import ConfigCenter
        from keel.gateway import parse_document

        doc = await ConfigCenter(store).get(config)
        if doc is None:
            fail(
                f"no route document {config!r}: publish one with "
                f"'keel config publish {config} FILE'",
                EXIT_NOT_FOUND,
            )
        parsed = parse_document(doc.content, name=config, fmt=doc.format)
        return doc.version, [route_row(r) for r in parsed.routes]

    version, rows = run(go())
    emit(fmt, rows, lambda wide: _routes_table(rows, wide))
    if fmt in ("table", "wide") and console.is_terminal:
        console.print(f"{config} version {version}: {len(rows)} routes", style="dim")


@gateway_app.command("check")
def check_cmd(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="A route document (YAML, JSON or TOML).")
    ],
) -> None:
    """Validate a route document without publishing it (exit 2 and one line if invalid)."""
    from keel.errors import ValidationError
    from keel.gateway import parse_document

    try:
        content = file.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        fail(f"cannot read {file}: {exc.strerror if isinstance(exc, OSError) else exc}")
    try:
        doc = parse_document(content, name=file.name)
    except ValidationError as exc:
        fail(str(exc).replace("\n", " "))
    print(f"{file}: valid, {len(doc.routes)} routes")


def register(app: typer.Typer) -> None:
    """Add ``keel gateway ...`` to the root app (with ``keys`` once it exists)."""
    from keel.cli._gateway_keys import keys_app

    gateway_app.add_typer(keys_app, name="keys")
    app.add_typer(gateway_app, name="gateway")

"""``keel run module:app --name orders``: serve an ASGI app as a registered keel Service."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer

from keel.cli._common import fail, run, state
from keel.errors import ValidationError
from keel.observe import setup
from keel.service import Service, ServiceSettings

__all__ = ["register"]


def run_cmd(
    target: Annotated[str, typer.Argument(help="The ASGI app as module:attribute.")],
    name: Annotated[str, typer.Option("--name", help="Service name clients resolve.")],
    port: Annotated[int | None, typer.Option(help="Port to bind (0: any free port).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Processes serving the port as one instance (KEEL_SERVICE_WORKERS)."),
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="Config center name to bind live (service.config).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING...")] = "INFO",
    console_logs: Annotated[
        bool, typer.Option("--console-logs", help="Human-readable logs instead of JSON.")
    ] = False,
    otlp_endpoint: Annotated[
        str | None, typer.Option(envvar="OTEL_EXPORTER_OTLP_ENDPOINT", help="Export spans here.")
    ] = None,
) -> None:
    """Serve an ASGI app: register when ready, /healthz /readyz /metrics, drain on SIGTERM.

    The current directory is importable, as with uvicorn. With ``--workers N``
    (N > 1) the port is served by N processes, each importing the app (see
    docs/services.md); one that cannot stops the start with its reason.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        settings = ServiceSettings.from_env().with_changes(port=port, host=host, workers=workers)
        service = Service(name, target, store=state.url, settings=settings, config=config)
    except ValidationError as exc:
        fail(str(exc))
    setup(name, level=log_level, json_logs=not console_logs, otlp_endpoint=otlp_endpoint)
    _use_uvloop()
    run(service.serve())


def _use_uvloop() -> None:
    """Serve on uvloop where it is installed (the loop uvicorn itself picks first)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def register(app: typer.Typer) -> None:
    """Add ``keel run`` to the root app."""
    app.command("run")(run_cmd)

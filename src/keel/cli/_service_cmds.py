"""``keel run module:app --name orders``: serve an ASGI app (or a keel.grpc.Server) by name."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from keel.cli._common import fail, run, state
from keel.errors import ValidationError

__all__ = ["register"]


def run_cmd(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:APP", help="ASGI app or keel.grpc.Server: module:attribute."
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="Service name clients resolve.")
    ],
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
    docs/services.md); one that cannot stops the start with its reason. A
    ``keel.grpc.Server`` object is served as gRPC instead (docs/grpc.md).
    """
    from keel.observe import setup
    from keel.service import Service, ServiceSettings

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        settings = ServiceSettings.from_env().with_changes(port=port, host=host, workers=workers)
        grpc_server = _grpc_server(target, settings.workers, config)
        if grpc_server is not None:
            grpc_server.override(name=name, store=state.store_url, port=port, host=host)
        else:
            service = Service(name, target, store=state.url, settings=settings, config=config)
    except ValidationError as exc:
        fail(str(exc))
    setup(name, level=log_level, json_logs=not console_logs, otlp_endpoint=otlp_endpoint)
    if grpc_server is not None:  # a keel.grpc.Server: served on asyncio's own loop
        run(grpc_server.serve())
        return
    _use_uvloop()
    run(service.serve())


def _grpc_server(target: str, workers: int, config: str | None) -> Any:
    """The ``keel.grpc.Server`` that ``target`` names, or None for an ASGI app.

    With ``workers`` > 1 the app is not imported here (each worker imports it).
    """
    from keel.service._server import import_app

    if workers > 1:
        return None
    found = import_app(target)
    if type(found).__module__ != "keel.grpc._server":  # keel.grpc is imported only if used
        return None
    if config is not None:
        raise ValidationError(f"--config binds an ASGI service's config; {target} is a gRPC server")
    return found


def _use_uvloop() -> None:
    """Serve on uvloop where it is installed (the loop uvicorn itself picks first)."""
    try:
        import uvloop
    except ImportError:
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def register(app: typer.Typer) -> None:
    """Add ``keel run`` to the root app."""
    app.command("run")(run_cmd)

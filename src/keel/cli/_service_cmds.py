"""``keel run module:app --name orders``: serve an ASGI app as a registered keel Service."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from typing import Annotated, Any

import typer

from keel.cli._common import fail, run, state
from keel.errors import ValidationError
from keel.observe import setup
from keel.service import Service, ServiceSettings

__all__ = ["load_app", "register"]


def load_app(target: str) -> Any:
    """Import ``module:attribute`` (the current directory is importable, as with uvicorn).

    Raises:
        ValidationError: the target is not ``module:attribute`` or cannot be imported.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValidationError(f"app {target!r}: write module:attribute, e.g. myapp:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError(f"app {target!r}: cannot import {module_name!r} ({exc})") from exc
    app = module
    for part in attribute.split("."):
        if not hasattr(app, part):
            raise ValidationError(f"app {target!r}: {module_name!r} has no attribute {part!r}")
        app = getattr(app, part)
    return app


def run_cmd(
    target: Annotated[str, typer.Argument(help="The ASGI app as module:attribute.")],
    name: Annotated[str, typer.Option("--name", help="Service name clients resolve.")],
    port: Annotated[int | None, typer.Option(help="Port to bind (0: any free port).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
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
    """Serve an ASGI app: register when ready, /healthz /readyz /metrics, drain on SIGTERM."""
    try:
        app = load_app(target)
        settings = ServiceSettings.from_env().with_changes(port=port, host=host)
        service = Service(name, app, store=state.url, settings=settings, config=config)
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

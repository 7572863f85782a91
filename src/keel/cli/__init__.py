"""The ``keel`` command line (typer + rich).

``keel up`` runs the local environment; ``keel store ...`` works on the store
directly. ``--store URL`` (or ``KEEL_STORE``) picks the store; the default is
the embedded SQLite file ``.keel/keel.db``.

Every error ends a command with one line on stderr and an exit code (see
:mod:`keel.cli._common`); ``keel --debug ...`` also prints the traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from keel.cli import (
    _config_cmds,
    _console_cmds,
    _coord_cmds,
    _events_cmds,
    _gateway_cmds,
    _instance_cmds,
    _jobs_cmds,
    _registry_cmds,
    _saga_cmds,
    _service_cmds,
    _store_cmds,
)
from keel.cli._argv import hoist_global_options
from keel.cli._common import EXIT_CODES, console, invoke, quiet_logs, run, state
from keel.cli._help import install as _install_help

_install_help()

__all__ = ["app", "main"]

_EPILOG = (
    "\b\nExit codes:\n"
    + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    + "\n  keel lock exits with its command's own code otherwise."
)

app = typer.Typer(
    help="keel: registry, config, locks, scheduling and resilience for Python services.\n\n"
    "Read commands take -o table|wide|json|yaml; piped output is never cut or coloured.",
    epilog=_EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)
app.add_typer(_store_cmds.app, name="store")
app.add_typer(_config_cmds.app, name="config")
app.add_typer(_instance_cmds.app, name="instance")
_coord_cmds.register(app)
_registry_cmds.register(app)
_service_cmds.register(app)
_jobs_cmds.register(app)
_saga_cmds.register(app)
_events_cmds.register(app)
_console_cmds.register(app)
_gateway_cmds.register(app)


def _version(value: bool) -> None:
    if value:
        from keel import __version__

        print(f"keel {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="KEEL_STORE",
            metavar="URL",
            help="Store URL: memory://, sqlite:///path.db, etcd://host:port[,host:port]. "
            "Default: sqlite:// (.keel/keel.db). May also follow the command.",
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="KEEL_DEBUG", help="Print the traceback of an error, too."),
    ] = False,
    _show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print keel's version and exit."
        ),
    ] = False,
) -> None:
    state.store_url = store
    source = ctx.get_parameter_source("store")
    state.url_source = (
        "KEEL_STORE"
        if source is not None and source.name == "ENVIRONMENT"
        else ("--store" if store else "default")
    )
    state.debug = debug
    quiet_logs(debug)


@app.command("up")
def up_cmd(
    duration: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", help="Stop by itself after this many seconds (0 = until Ctrl-C)."
        ),
    ] = 0.0,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    shop_port: Annotated[
        int,
        typer.Option(metavar="PORT", help="Port of the example shop's gateway (the next 5 too)."),
    ] = 8080,
    console_port: Annotated[
        int, typer.Option(metavar="PORT", help="Port of the web console (0: any free port).")
    ] = 8470,
    plain: Annotated[
        bool, typer.Option("--plain", help="One status line per change, as without a terminal.")
    ] = False,
) -> None:
    """Run the local environment on the embedded store with a live view, until Ctrl-C.

    The view fits the terminal (the most useful panels first). Without a
    terminal it prints one status line per change.

    Terms: health 'lease' = alive while its session's lease is renewed;
    'checked' = the health checker probes it too; 'failing' = its probes fail.
    'token' = the fencing token of a lock's owner or a leader (it grows with
    every new owner); 'waiting' = sessions queued behind the owner;
    'requests' and '5xx/s' = requests and server errors per second from the
    shop's /metrics; 'recent' = durations of a job's last runs; 'late' = how
    long after its fire time the last run started.
    """
    from keel.cli._up import run_up  # the demo stack is imported only when it runs

    try:
        run(
            run_up(
                state.url,
                duration_s=duration or None,
                once=once,
                shop_port=shop_port,
                console_port=console_port,
                plain=plain or None,
            )
        )
    except typer.Exit as exc:
        if exc.exit_code != 130:
            raise
    console.print("keel up: stopped cleanly")


app.command("status", help="Same as 'keel store status': which store, where from, what is in it.")(
    _store_cmds.status_cmd
)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``keel`` script: run the command, exit with its code."""
    sys.exit(invoke(app, hoist_global_options(sys.argv[1:] if args is None else args)))

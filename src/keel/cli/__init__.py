"""The ``keel`` command line (typer + rich).

``keel up`` runs the local environment; ``keel store ...`` works on the store
directly. ``--store URL`` (or ``KEEL_STORE``) picks the store; the default is
the embedded SQLite file ``.keel/keel.db``.

Every error ends a command with one line on stderr and an exit code (see
:mod:`keel.cli._common`); ``keel --debug ...`` also prints the traceback.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Annotated, Any

import typer

from keel.cli._argv import command_word, hoist_global_options
from keel.cli._common import EXIT_CODES, console, invoke, quiet_logs, run, state
from keel.cli._help import install as _install_help

_install_help()

__all__ = ["app", "main"]

_EPILOG = (
    "\b\nExit codes:\n"
    + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    + "\n  keel lock exits with its command's own code otherwise."
)

# Each module of commands and the top-level words it adds, in help order. A
# command line loads only the module of its word (typer would otherwise import
# every module and read every command's signature on each start).
_MODULES: dict[str, tuple[str, ...]] = {
    "_store_cmds": ("store",),
    "_config_cmds": ("config",),
    "_instance_cmds": ("instance",),
    "_coord_cmds": ("locks", "lock", "leader"),
    "_registry_cmds": ("services", "instances", "register", "deregister", "health-checker"),
    "_service_cmds": ("run",),
    "_jobs_cmds": ("worker", "jobs"),
    "_up": ("up",),
    "_status": ("status",),
    "_saga_cmds": ("sagas",),
    "_events_cmds": ("events",),
    "_console_cmds": ("console",),
    "_gateway_cmds": ("gateway",),
}


def _new_app() -> typer.Typer:
    return typer.Typer(
        help="keel: registry, config, locks, scheduling and resilience for Python services.\n\n"
        "Read commands take -o table|wide|json|yaml; piped output is never cut or coloured.",
        epilog=_EPILOG,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,
    )


def _add(root: typer.Typer, module: str) -> None:
    """Register the commands of ``module`` on ``root``."""
    if module == "_up":
        root.command("up")(up_cmd)
        return
    if module == "_status":
        from keel.cli import _store_cmds

        root.command(
            "status", help="Same as 'keel store status': which store, where from, what is in it."
        )(_store_cmds.status_cmd)
        return
    if module in ("_store_cmds", "_config_cmds", "_instance_cmds"):
        group = import_module(f"keel.cli.{module}")
        root.add_typer(group.app, name=_MODULES[module][0])
        return
    import_module(f"keel.cli.{module}").register(root)


def build_app(word: str | None = None) -> typer.Typer:
    """The root app with the commands of ``word``'s module only, or with all of them."""
    root = _new_app()
    root.callback()(_options)
    modules = [m for m, words in _MODULES.items() if word in words] or list(_MODULES)
    for module in modules:
        _add(root, module)
    return root


def _version(value: bool) -> None:
    if value:
        from keel import __version__

        print(f"keel {__version__}")
        raise typer.Exit(0)


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


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``keel`` script: run the command, exit with its code."""
    argv = hoist_global_options(sys.argv[1:] if args is None else args)
    sys.exit(invoke(build_app(command_word(argv)), argv))


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole command tree, for documentation and tests
        return build_app()
    raise AttributeError(f"module 'keel.cli' has no attribute {name!r}")

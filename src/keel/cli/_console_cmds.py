"""``keel console``: serve the web console; ``adduser``, ``passwd``, ``users``, ``rmuser``.

Passwords are read from a prompt (typed twice) or, with ``--password-stdin``,
from the first line of standard input; never from an argument, where they
would land in shell history and ``ps``. User changes made here are written to
the console's audit log too, as ``cli:<login name>``.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from keel.cli._common import cell, console, err_console, fail, run, with_store
from keel.cli._output import JsonFlag, OutputOption, emit, output_format

if TYPE_CHECKING:
    from keel.store import Store

__all__ = ["app", "register"]

app = typer.Typer(
    help="The web console. Without a command: serve it (http://127.0.0.1:8470) until Ctrl-C; "
    "a non-loopback --host needs TLS or --allow-remote. First user: "
    "keel console adduser NAME --role admin.",
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

RoleOption = Annotated[
    str, typer.Option("--role", "-r", metavar="ROLE", help="viewer, operator or admin.")
]
PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
]


@app.callback(invoke_without_command=True)
def console_cmd(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8470; 0: any).")] = None,
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", metavar="FILE", help="PEM certificate: serve HTTPS.")
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", metavar="FILE", help="PEM private key of --tls-cert.")
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote", help="Bind a non-loopback address without TLS (behind a TLS proxy)."
        ),
    ] = False,
) -> None:
    """Serve the web console (http://127.0.0.1:8470 by default) until Ctrl-C.

    A non-loopback --host needs --tls-cert/--tls-key, or --allow-remote when a
    TLS-terminating proxy sits in front. Create the first user with
    `'keel console adduser NAME --role admin'`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from keel.console import ConsoleSettings

    settings = ConsoleSettings(
        host=host, tls_cert=tls_cert, tls_key=tls_key, allow_remote=allow_remote
    ).with_changes(port=port)
    run(_serve(settings))


@with_store
async def _serve(store: Store, settings: Any) -> None:
    import asyncio

    from keel._signals import on_stop_signal
    from keel.console import first_user_hint, serve

    stop = asyncio.Event()
    hint = await first_user_hint(store)

    def ready(url: str) -> None:
        console.print(f"keel console: serving {url}", markup=False, highlight=False)
        if hint:
            console.print(f"keel console: {hint}", markup=False, highlight=False)

    def setup(link: str) -> None:
        console.print(f"keel console: or open once: {link}", markup=False, highlight=False)

    with on_stop_signal(lambda _signal: stop.set()):
        await serve(store, settings, stop=stop, on_ready=ready, on_setup=setup)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            fail("--password-stdin: standard input had no password on its first line")
        return password
    if not sys.stdin.isatty():
        fail("no terminal to ask for the password: pipe it with --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        fail("the two passwords differ: try again")
    return first


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


async def _audit(store: Store, action: str, name: str, **fields: Any) -> None:
    from keel.console._audit import Audit

    await Audit(store).record(_actor(), action, f"user/{name}", **fields)


@app.command("adduser")
def adduser_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME", help="User name (a-z 0-9 _ . -).")],
    role: RoleOption = "viewer",
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a console user (the first should be an admin)."""
    from keel.console import Role

    parsed = Role.parse(role)
    password = _read_password(password_stdin)

    @with_store
    async def go(store: Store) -> None:
        from keel.console import Users

        user = await Users(store).add(name, password, parsed)
        await _audit(store, "user.add", user.name, after={"role": parsed.label})

    run(go())
    console.print(f"console user {name} added ({parsed.label})", markup=False, highlight=False)


@app.command("passwd")
def passwd_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The user.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a console user's password (their open sessions end)."""
    password = _read_password(password_stdin)

    @with_store
    async def go(store: Store) -> int:
        from keel.console import Users
        from keel.console._sessions import Sessions

        await Users(store).passwd(name, password)
        ended = await Sessions(store).end_all(name)
        await _audit(store, "user.passwd", name, detail={"sessions_ended": ended})
        return ended

    ended = run(go())
    console.print(f"password of {name} changed; {ended} session(s) ended", markup=False)


@app.command("rmuser")
def rmuser_cmd(name: Annotated[str, typer.Argument(metavar="NAME", help="The user.")]) -> None:
    """Remove a console user (their open sessions end; the last admin stays)."""

    @with_store
    async def go(store: Store) -> None:
        from keel.console import Users
        from keel.console._sessions import Sessions

        user = await Users(store).remove(name)
        ended = await Sessions(store).end_all(name)
        await _audit(
            store,
            "user.remove",
            name,
            before={"role": user.role.label},
            detail={"sessions_ended": ended},
        )

    run(go())
    console.print(f"console user {name} removed", markup=False, highlight=False)


@app.command("users")
def users_cmd(output: OutputOption = "table", as_json: JsonFlag = False) -> None:
    """List console users and their roles (never a hash)."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> list[dict[str, Any]]:
        from keel.console import Users

        return [
            {
                "name": u.name,
                "role": u.role.label,
                "created_at": u.created_at,
                "updated_at": u.updated_at,
            }
            for u in await Users(store).list()
        ]

    rows = run(go())

    def table(wide: bool) -> Table:
        grid = Table("NAME", "ROLE", *(("CREATED", "UPDATED") if wide else ()), box=None)
        for row in rows:
            extra = (str(row["created_at"]), str(row["updated_at"])) if wide else ()
            grid.add_row(cell(row["name"]), row["role"], *extra)
        return grid

    emit(fmt, rows, table)
    if not rows:
        err_console.print(
            "no console user: create one with 'keel console adduser NAME --role admin'",
            markup=False,
        )


def register(root: typer.Typer) -> None:
    """Mount ``keel console`` on the root CLI."""
    root.add_typer(app, name="console")

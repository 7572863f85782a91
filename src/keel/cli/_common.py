"""What every CLI command shares: the store URL, running a coroutine, errors, safe output.

Errors have one handler, :func:`report`: whatever a command ends with (a
:class:`~keel.errors.KeelError`, a usage error of typer/click, a ``ValueError``
or ``UnicodeError`` from parsing input) becomes one line on stderr naming the
problem and the fix, and an exit code; nothing is changed. ``keel --debug``
also prints the traceback. Exit codes (:data:`EXIT_CODES`, also in ``keel
--help``): 0 done; 1 not found (a key, a job, a service, a store file) or an
internal error; 2 bad input; 3 the store is unavailable; 4 timed out; 5 a lock
lost while its command ran; 130 interrupted (Ctrl-C); ``keel lock`` returns
its command's own code otherwise.

This module imports no store, backend or domain package at import time, so
that ``keel --help`` starts fast; commands import what they use when they run.

Keys and values come from the store, so anyone may have written them: text
printed for a terminal goes through :func:`printable`, which shows control
characters as escapes (``\\x1b``) instead of sending them to the terminal.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, overload

import typer
from rich.console import Console
from rich.text import Text

from keel.errors import (
    KeelError,
    LockLostError,
    NotFoundError,
    StoreUnavailableError,
    ValidationError,
)

if TYPE_CHECKING:
    from keel._aio import Opening
    from keel.store import Store

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_INTERRUPTED",
    "EXIT_LOCK_LOST",
    "EXIT_NOT_FOUND",
    "EXIT_TIMED_OUT",
    "EXIT_UNAVAILABLE",
    "cell",
    "console",
    "err_console",
    "exit_code",
    "fail",
    "invoke",
    "open_store",
    "parse_lease_id",
    "printable",
    "printable_bytes",
    "quiet_logs",
    "report",
    "run",
    "state",
    "with_store",
    "write_bytes",
]

EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_TIMED_OUT = 4
EXIT_LOCK_LOST = 5
EXIT_INTERRUPTED = 130
_EXIT_INTERNAL = 1
EXIT_CODES = {
    0: "done",
    EXIT_NOT_FOUND: "not found (a key, job, service, config, store file...), or an internal error",
    EXIT_BAD_INPUT: "bad input (nothing was changed)",
    EXIT_UNAVAILABLE: "the store is unavailable (unreachable, or did not answer in time)",
    EXIT_TIMED_OUT: "timed out (e.g. keel lock --timeout)",
    EXIT_LOCK_LOST: "keel lock: the lock was lost while the command ran (it was stopped)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
MAX_INT64 = (1 << 63) - 1
_PLAIN = not sys.stdout.isatty()
# To a pipe or a file: no colour, no truncation, no wrapping (a wide virtual
# page); rich itself honours NO_COLOR on a terminal.
console = Console(
    highlight=False, soft_wrap=True, width=1 << 20 if _PLAIN else None, no_color=_PLAIN or None
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
T = TypeVar("T")


class _State:
    """Options given before the command (``keel --store URL --debug ...``)."""

    store_url: str | None = None
    url_source: str = "default"  # "--store", "KEEL_STORE" or "default"
    debug: bool = False

    @property
    def url(self) -> str:
        """The store URL in use: ``--store``, else ``KEEL_STORE``, else the default."""
        if self.store_url:
            return self.store_url
        from keel.store import default_url

        return default_url()


state = _State()

# -- safe output -------------------------------------------------------------

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes, safe for a terminal.

    C0/C1 controls (ESC of terminal escape codes, BEL, newlines), Unicode
    format characters (bidirectional overrides, zero-width joiners), line and
    paragraph separators and lone surrogates become ``\\x1b``, ``\\n``,
    ``\\u202e``...; everything else, non-ASCII letters included, stays.
    """
    if text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


def printable_bytes(value: bytes) -> str:
    """A value as text for a terminal: UTF-8, bytes that are not shown as ``\\xff``."""
    return printable(value.decode("utf-8", "backslashreplace"))


def cell(text: str) -> Text:
    """A table cell showing ``text`` literally: escaped, and never read as rich markup."""
    return Text(printable(text))


def write_bytes(data: bytes) -> None:
    """Write raw bytes to stdout (values are bytes, not text)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# -- errors ------------------------------------------------------------------


def _one_line(message: str) -> str:
    """A message as one safe line: its lines joined with '; ', controls escaped."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return printable("; ".join(lines))


def _print_error(message: str) -> None:
    err_console.print(Text("keel: error: ", style="bold red") + Text(_one_line(message)))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``keel: error: message`` on stderr (one line) and exit with ``code``."""
    _print_error(message)
    raise typer.Exit(code)


def _leaf(exc: BaseException) -> BaseException:
    """The error to report from an exception group: its first keel error, else its first."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        leaves = exc.exceptions
        exc = next((e for e in leaves if isinstance(e, KeelError)), leaves[0])
    return exc


def _usage_line(exc: typer.TyperException) -> tuple[str, int]:
    format_message = getattr(exc, "format_message", None)
    message = str(format_message() if callable(format_message) else exc).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path} --help" if ctx is not None else "keel --help"
    return f"{message}: see '{where}'", int(getattr(exc, "exit_code", EXIT_BAD_INPUT))


_KEEL_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (NotFoundError, EXIT_NOT_FOUND),
    (StoreUnavailableError, EXIT_UNAVAILABLE),
    (LockLostError, EXIT_LOCK_LOST),
    (TimeoutError, EXIT_TIMED_OUT),  # DeadlineExceededError too
    (ValidationError, EXIT_BAD_INPUT),
    (KeelError, EXIT_BAD_INPUT),  # the store refused (auth, compacted, conflict...)
)


def exit_code(exc: BaseException) -> int | None:
    """The exit code of a keel error class (the one mapping), None if ``exc`` is not one."""
    for cls, code in _KEEL_CODES:
        if isinstance(exc, cls):
            return code
    return None


def _where_from() -> str:
    """Where the store URL came from (the default or KEEL_STORE), for an error about the store."""
    if state.url_source == "default":
        return (
            "the default store, .keel/keel.db under the working directory; "
            "give --store URL or set KEEL_STORE to use another"
        )
    return f"the store URL came from {state.url_source}"


def _error_line(exc: BaseException) -> tuple[str, int]:
    """The line to print for an error, and the exit code."""
    code = exit_code(exc)
    if code is not None:
        if type(exc).__name__ == "StoreNotFoundError" and state.url_source != "--store":
            return f"{exc} ({_where_from()})", code
        if code == EXIT_TIMED_OUT and not str(exc):
            return "timed out: try again, or give a longer timeout", code
        return str(exc), code
    if isinstance(exc, ConnectionError):
        return (
            f"the store is unreachable ({exc}): check the --store URL and that it is running",
            EXIT_UNAVAILABLE,
        )
    if isinstance(exc, typer.Abort):
        return "aborted", _EXIT_INTERNAL
    if isinstance(exc, typer.TyperException):
        return _usage_line(exc)
    if isinstance(exc, UnicodeError):
        return (
            f"an argument is not valid UTF-8 text ({exc}): give keys and names in UTF-8; "
            f"pass binary values with --file",
            EXIT_BAD_INPUT,
        )
    if isinstance(exc, OverflowError):
        return f"a number is out of range ({exc}): give a smaller number", EXIT_BAD_INPUT
    if isinstance(exc, ValueError):
        return f"bad input: {exc}: check the arguments (see --help)", EXIT_BAD_INPUT
    return (
        f"internal error: {type(exc).__name__}: {exc}: run again with 'keel --debug' "
        f"for the traceback and report it",
        _EXIT_INTERNAL,
    )


def _silence_stdout() -> None:
    """The reader of stdout went away (``keel store ls | head``): drop what is left."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def report(exc: BaseException) -> int:
    """The one error handler: print one line for ``exc`` (and its traceback under --debug).

    Returns:
        The exit code (see the module docstring).
    """
    exc = _leaf(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()
        return _EXIT_INTERNAL
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
        return int(getattr(exc, "exit_code", EXIT_BAD_INPUT))
    if state.debug:
        traceback.print_exception(exc, file=sys.stderr)
    message, code = _error_line(exc)
    _print_error(message)
    return code


def quiet_logs(debug: bool) -> None:
    """Keep keel's log records off stderr (the error line says it), or show them all (--debug).

    Commands that configure logging themselves (``keel run``, ``keel worker``)
    still get every record: this only stands in for Python's last-resort
    handler, which would print warnings as stray lines.
    """
    logger = logging.getLogger("keel")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    if debug:
        logging.basicConfig(format="keel: %(levelname)s %(name)s: %(message)s")
        logger.setLevel(logging.DEBUG)


def invoke(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the CLI app; every error goes through :func:`report`. Returns the exit code."""
    quiet_logs(debug=False)
    try:
        result = app(args=args, standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:  # the one handler of the CLI: KeyboardInterrupt too
        return report(exc)
    return result if isinstance(result, int) else 0


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; an error ends the command through :func:`report`."""
    try:
        import asyncio  # here, not at import: keel --help does not need it

        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as exc:
        raise typer.Exit(report(exc)) from None


# -- the store ---------------------------------------------------------------


def open_store(*, readonly: bool = False) -> Opening[Store]:
    """Connect to the store named by ``--store`` / ``KEEL_STORE`` / the default.

    Args:
        readonly: the command only reads: a SQLite file that does not exist is
            reported ("no store at ...", exit 1) instead of created empty.
    """
    from keel._connect import connect

    return connect(state.url, create=not readonly)


_Command = Callable[..., Coroutine[Any, Any, T]]


@overload
def with_store(func: Callable[..., Awaitable[T]], /) -> _Command[T]: ...


@overload
def with_store(
    *, readonly: bool = False
) -> Callable[[Callable[..., Awaitable[T]]], _Command[T]]: ...


def with_store(
    func: Callable[..., Awaitable[T]] | None = None, /, *, readonly: bool = False
) -> _Command[T] | Callable[[Callable[..., Awaitable[T]]], _Command[T]]:
    """Decorate ``async def cmd(store, ...)`` so it is called with an open store.

    ``@with_store`` opens (and may create) the store; ``@with_store(readonly=True)``
    is for commands that only read: a missing SQLite file is an error, not a
    new empty store.
    """

    def decorate(fn: Callable[..., Awaitable[T]]) -> _Command[T]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            async with open_store(readonly=readonly) as store:
                return await fn(store, *args, **kwargs)

        return wrapper

    return decorate if func is None else decorate(func)


def parse_lease_id(text: str) -> int:
    """Parse a lease id given in decimal or hex (``0x...`` or etcdctl's bare hex)."""
    raw = text.strip().lower()
    try:
        if raw.startswith("0x") or any(c in "abcdef" for c in raw):
            value = int(raw, 16)
        else:
            value = int(raw)
    except ValueError:
        fail(f"lease id {text!r} is not a number: give it in decimal or hex (0x...)")
    if not 0 <= value <= MAX_INT64:
        fail(f"lease id {text!r} is out of range: lease ids are 0 to 2**63-1 (int64)")
    return value

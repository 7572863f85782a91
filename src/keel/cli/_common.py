"""What every CLI command shares: the store URL, running a coroutine, and errors.

Bad input and unreachable stores end the command with one line on stderr
naming the problem and the fix, and exit code 2; nothing is changed.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

import keel
from keel._aio import Opening
from keel.errors import KeelError
from keel.store import Store, default_url

__all__ = [
    "EXIT_BAD_INPUT",
    "console",
    "err_console",
    "fail",
    "open_store",
    "parse_lease_id",
    "run",
    "state",
    "with_store",
    "write_bytes",
]

EXIT_BAD_INPUT = 2
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
T = TypeVar("T")


class _State:
    """Options given before the command (``keel --store URL ...``)."""

    store_url: str | None = None

    @property
    def url(self) -> str:
        return self.store_url or default_url()


state = _State()


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``keel: error: message`` on stderr and exit with ``code``."""
    err_console.print(f"[bold red]keel: error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def open_store() -> Opening[Store]:
    """Connect to the store named by ``--store`` / ``KEEL_STORE`` / the default."""
    return keel.connect(state.url)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; turn keel errors into one line and exit code 2."""
    try:
        return asyncio.run(coro)
    except KeelError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def with_store(
    func: Callable[..., Awaitable[T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """Decorate ``async def cmd(store, ...)`` so it is called with an open store."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        async with open_store() as store:
            return await func(store, *args, **kwargs)

    return wrapper


def parse_lease_id(text: str) -> int:
    """Parse a lease id given in decimal or hex (``0x...`` or etcdctl's bare hex)."""
    raw = text.strip().lower()
    try:
        if raw.startswith("0x"):
            return int(raw, 16)
        if any(c in "abcdef" for c in raw):
            return int(raw, 16)
        return int(raw)
    except ValueError:
        fail(f"lease id {text!r} is not a number: give it in decimal or hex (0x...)")


def write_bytes(data: bytes) -> None:
    """Write raw bytes to stdout (values are bytes, not text)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()

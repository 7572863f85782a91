"""The keel web console: services, configs, jobs, coordination, sagas and the store, live.

``keel console`` serves it (and ``keel up`` starts it); :func:`create_app`
builds the ASGI app over a store for embedding and tests, :func:`serve` runs
it. Users and roles (:class:`Users`, :class:`Role`) live in the store with
argon2 hashes; there is no default user: ``keel console adduser NAME --role
admin`` makes the first. See ``docs/console.md`` for the pages and the
security model.

The web stack (Starlette, Jinja2, uvicorn) is imported when :func:`create_app`,
:func:`serve`, :func:`first_user_hint` or :class:`Console` is first used, so
``keel console adduser`` and ``keel console users`` start quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keel.console._settings import DEFAULT_PORT, ConsoleSettings, is_loopback
from keel.console._users import Role, User, Users

if TYPE_CHECKING:
    from keel.console._app import Console, create_app
    from keel.console._serve import first_user_hint, serve

__all__ = [
    "DEFAULT_PORT",
    "Console",
    "ConsoleSettings",
    "Role",
    "User",
    "Users",
    "create_app",
    "first_user_hint",
    "is_loopback",
    "serve",
]

_LAZY = {
    "Console": "keel.console._app",
    "create_app": "keel.console._app",
    "first_user_hint": "keel.console._serve",
    "serve": "keel.console._serve",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.console' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

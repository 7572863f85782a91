"""The keel web console: services, configs, jobs, coordination, sagas and the store, live.

``keel console`` serves it (and ``keel up`` starts it); :func:`create_app`
builds the ASGI app over a store for embedding and tests. Users and roles
(:class:`Users`, :class:`Role`) live in the store with argon2 hashes; there is
no default user: ``keel console adduser NAME --role admin`` makes the first.
See ``docs/console.md`` for the pages and the security model.
"""

from keel.console._app import Console, create_app
from keel.console._serve import serve
from keel.console._settings import DEFAULT_PORT, ConsoleSettings, is_loopback
from keel.console._users import Role, User, Users

__all__ = [
    "DEFAULT_PORT",
    "Console",
    "ConsoleSettings",
    "Role",
    "User",
    "Users",
    "create_app",
    "is_loopback",
    "serve",
]

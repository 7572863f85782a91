"""A one-time setup link: the first admin created in the browser, while no user exists.

When the console starts on a store without users, its caller may ask
:func:`~keel.console.serve` for a setup link (``/setup?token=...``, a random
256-bit token held only in this process's memory, as a hash). The link works
once, only while there is still no user, and only on this console process;
it is printed on the console's own terminal, never logged or stored. After
it is used (or once any user exists, say from ``keel console adduser``), it
answers 404 like a wrong token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from keel.console._csrf import origin_ok
from keel.console._pages import console, render
from keel.console._users import Role
from keel.errors import ConflictError, ValidationError

__all__ = ["SetupToken", "setup_routes"]


class SetupToken:
    """The one-time setup token of one console process (only its hash is kept)."""

    def __init__(self) -> None:
        self._digest: bytes | None = None

    def issue(self) -> str:
        """A new token (replacing any earlier one)."""
        token = secrets.token_urlsafe(32)
        self._digest = hashlib.sha256(token.encode()).digest()
        return token

    def matches(self, token: object) -> bool:
        """Whether ``token`` is the live token (constant time)."""
        if self._digest is None or not isinstance(token, str) or not 0 < len(token) <= 128:
            return False
        return hmac.compare_digest(self._digest, hashlib.sha256(token.encode()).digest())

    def spend(self) -> None:
        """Make the token useless."""
        self._digest = None

    def take(self) -> bytes | None:
        """Spend the token, returning it (hashed) so a failed use can :meth:`restore` it."""
        digest, self._digest = self._digest, None
        return digest

    def restore(self, digest: bytes | None) -> None:
        """Make a token taken by :meth:`take` usable again."""
        self._digest = digest

    @property
    def active(self) -> bool:
        """Whether a token is waiting to be used."""
        return self._digest is not None

    def __repr__(self) -> str:
        return f"SetupToken(active={self.active})"


def setup_routes() -> list[BaseRoute]:
    """``GET /setup`` (the form) and ``POST /setup`` (create the first admin)."""
    return [Route("/setup", setup_form, methods=["GET"]), Route("/setup", setup, methods=["POST"])]


async def _usable(request: Request, token: object) -> bool:
    app = console(request)
    if not app.setup.matches(token):
        return False
    if await app.users.list():
        app.setup.spend()  # someone made a user another way: the link has no purpose left
        return False
    return True


def _gone(request: Request) -> Response:
    return render(
        request,
        "error.html",
        status_code=404,
        title="No setup here",
        message="This setup link is wrong or used up. "
        "Create users with 'keel console adduser NAME --role admin'.",
    )


async def setup_form(request: Request) -> Response:
    """The form for the first admin (404 unless the token is live and no user exists)."""
    token = request.query_params.get("token")
    if not await _usable(request, token):
        return _gone(request)
    return render(request, "setup.html", token=token, error="")


async def setup(request: Request) -> Response:
    """Create the first admin and spend the token."""
    form = await request.form()
    token = form.get("token")
    app = console(request)
    if not origin_ok(request) or not app.setup.matches(token):
        return _gone(request)
    taken = app.setup.take()  # before any await: a request racing this one finds no token
    if await app.users.list():
        return _gone(request)  # a user was made another way: the link dies
    name = str(form.get("name", "")).strip().lower()
    password = str(form.get("password", ""))
    try:
        if password != str(form.get("confirm", "")):
            raise ValidationError("the two passwords differ: type the same password twice")
        user = await app.users.add(name, password, Role.ADMIN)
    except (ValidationError, ConflictError) as exc:
        app.setup.restore(taken)
        return render(request, "setup.html", status_code=400, token=token, error=str(exc))
    await app.audit.record("setup", "user.add", f"user/{user.name}", after={"role": "admin"})
    return RedirectResponse("/login", status_code=303)

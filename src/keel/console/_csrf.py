"""CSRF protection: every request that changes something carries the session's token.

Forms carry it in a hidden ``csrf`` field (``{{ csrf_field() }}`` in templates),
scripts in the ``X-CSRF-Token`` header. The token is random per session
(:mod:`keel.console._sessions`) and compared in constant time. On top of the
token, a request whose ``Origin`` header names another site is refused, and
the session cookie is SameSite=Strict: three locks, any one of which stops a
cross-site form post.

The login form has no session yet: it uses a double-submit token, a random
value in a short-lived SameSite=Strict cookie that the form repeats.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request

__all__ = ["FIELD", "HEADER", "LOGIN_COOKIE", "new_token", "origin_ok", "token_matches"]

FIELD = "csrf"
HEADER = "x-csrf-token"
LOGIN_COOKIE = "keel_login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_token() -> str:
    """A fresh random token (for the login form's double submit)."""
    return secrets.token_urlsafe(32)


def token_matches(expected: str, given: str | None) -> bool:
    """Whether ``given`` is ``expected`` (constant time; empty never matches)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def origin_ok(request: Request) -> bool:
    """False when the request names an origin other than the console's own.

    Browsers send ``Origin`` on every POST; a missing header (old clients,
    curl) is left to the token check.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def submitted_token(request: Request) -> str | None:
    """The token a change request carries: header first, else the form field."""
    header = request.headers.get(HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(FIELD)
        return value if isinstance(value, str) else None
    return None

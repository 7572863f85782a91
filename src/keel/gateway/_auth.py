"""Who is calling: the authenticated :class:`Consumer`, and :class:`Authenticator` per route.

The app calls ``authenticator.authenticate(route.auth, headers)`` once per
request of a route with ``auth``. It returns the :class:`Consumer`, or None for
an anonymous request on a route with ``required: false``, or raises
:class:`AuthError` (401 with ``WWW-Authenticate``), which the app turns into
the response. Presented but bad credentials are refused even when
``required`` is false: a client never silently loses its identity.

An :class:`Authenticator` is cheap: built from the verifiers of the current
document (see :class:`~keel.gateway._jwt.JwtKeys`) and the long-lived
:class:`~keel.gateway._apikeys.ApiKeys`, rebuilt on each publish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from keel import errors
from keel.gateway._policy import AuthConfig

if TYPE_CHECKING:
    from keel.gateway._apikeys import ApiKeys
    from keel.gateway._jwt import JwtVerifier

__all__ = ["API_KEY_PREFIX", "AuthConfig", "AuthError", "Authenticator", "Consumer"]

API_KEY_PREFIX = "keel_"
"""Every API key secret starts with this (and so is told apart from a JWT)."""

_KEY_PREFIX = API_KEY_PREFIX.encode()
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_MAX_NAME = 256


@dataclass(frozen=True, slots=True)
class Consumer:
    """An authenticated caller.

    Attributes:
        name: the consumer's name (the JWT's consumer claim, or the API key's consumer);
            it becomes the consumer header sent upstream.
        method: ``"jwt"`` or ``"api_key"``.
        key_id: the API key's id (None for JWTs).
        claims: the verified JWT claims (empty for API keys).
        hide_authorization: the API key came as ``Authorization: Bearer``; that
            header is not sent upstream (unless the route's ``forward_api_key``).
    """

    name: str
    method: Literal["jwt", "api_key"]
    key_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)
    hide_authorization: bool = False


class AuthError(errors.AuthError):
    """A request's credentials are missing or refused.

    Attributes:
        status: the HTTP status to answer (401, or 403).
        reason: a short reason safe to show the client (never a secret or a token).
        headers: response headers (``WWW-Authenticate``).
    """

    def __init__(self, reason: str, *, status: int = 401, error: str = "invalid_token") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        quoted = reason.replace("\\", "").replace('"', "'")
        challenge = f'Bearer realm="keel", error="{error}", error_description="{quoted}"'
        if error == "":
            challenge = 'Bearer realm="keel"'
        self.headers: list[tuple[bytes, bytes]] = [
            (b"www-authenticate", challenge.encode("ascii", "replace"))
        ]


def check_consumer_name(name: object) -> str:
    """Return ``name`` if it can travel in a header (printable ASCII, 1..256 chars).

    Raises:
        AuthError: the name is missing, too long or has control/non-ASCII characters.
    """
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= _MAX_NAME
        or not name.isascii()
        or not name.isprintable()
    ):
        raise AuthError("the consumer claim is missing or not a short printable ASCII string")
    return name


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:  # (ASGI: lowercase names)
        if key == name:
            return value
    return None


class Authenticator:
    """Authenticates requests against the current document's verifiers and the API keys.

    Args:
        verifiers: JWT verifiers by name (from :meth:`JwtKeys.verifiers`).
        api_keys: the API key table (None when no route uses API keys).
    """

    __slots__ = ("_api_keys", "_verifiers")

    def __init__(
        self, verifiers: Mapping[str, JwtVerifier], api_keys: ApiKeys | None = None
    ) -> None:
        self._verifiers = dict(verifiers)
        self._api_keys = api_keys

    def authenticate(self, auth: AuthConfig, headers: list[tuple[bytes, bytes]]) -> Consumer | None:
        """The consumer behind ``headers`` under the route's ``auth``.

        Args:
            auth: the route's auth settings.
            headers: the request headers (ASGI: lower-case names).

        Returns:
            The consumer, or None when no credentials came and ``auth.required`` is false.

        Raises:
            AuthError: credentials are missing (and required), malformed or refused.
        """
        bearer = _bearer(_header(headers, b"authorization"))
        if auth.api_key:
            secret = None
            if auth.api_key_header is not None:
                secret = _header(headers, auth.api_key_header.encode("latin-1"))
            if (
                secret is None
                and auth.api_key_bearer
                and bearer is not None
                and (bearer.startswith(_KEY_PREFIX) or auth.jwt is None)
            ):
                consumer = self._api_key(bearer)
                if auth.forward_api_key:
                    return consumer
                # the key came as a bearer token: a secret of the client's, as in its header
                return replace(consumer, hide_authorization=True)
            if secret is not None:
                return self._api_key(secret)
        if auth.jwt is not None and bearer is not None:
            return self._jwt(auth.jwt, bearer)
        if auth.required:
            raise AuthError("credentials required", error="")
        return None

    def _api_key(self, secret: bytes) -> Consumer:
        if self._api_keys is None:
            raise AuthError("API keys are not available on this gateway")
        return self._api_keys.verify(secret)

    def _jwt(self, name: str, token: bytes) -> Consumer:
        verifier = self._verifiers.get(name)
        if verifier is None:  # the document model checks names; this is a guard
            raise AuthError(f"no JWT verifier named {name!r}")
        return verifier.verify(token)

    def __repr__(self) -> str:
        keys = self._api_keys is not None
        return f"Authenticator(jwt={sorted(self._verifiers)}, api_keys={keys})"


def _bearer(value: bytes | None) -> bytes | None:
    if value is None or len(value) < 7 or value[:7].lower() != b"bearer ":
        return None
    token = value[7:].strip()
    return token or None

"""JWT verification: PyJWT with explicit algorithms, keys from a file or a live JWKS.

A :class:`JwtVerifier` checks one token against one :class:`JwtConfig`: the
header's ``alg`` must be one the verifier lists (never ``none``; HMAC and
public-key algorithms never share a verifier, so an HS256 token "signed" with
an RSA public key is refused before any key is touched), the signature, and
the claims ``exp`` (required), ``nbf`` (when present), ``aud`` and ``iss``
(required) with the configured leeway. The consumer is the ``consumer_claim``.

Keys: ``key_file`` is read when the verifier is built (a publish), and checked
then (its type fits the algorithms, HMAC secrets are long enough); a JWKS comes
from a config-center document followed by :class:`JwtKeys` through
``LiveConfig``, so publishing a rotated JWKS (``keel config publish jwks.json``)
applies on the next request. A token's ``kid`` picks the key; a token without
``kid`` is accepted only when exactly one key fits.

Verifying an RS256 signature costs tens of microseconds; the same token comes
back on every request of a session, so successes are cached (a bounded LRU of
token → consumer, reused for at most a minute and never past the token's own
``exp``, dropped when the key set changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import jwt

from keel.clock import SYSTEM_CLOCK, Clock, SystemClock
from keel.errors import KeelError, StoreClosedError, ValidationError
from keel.gateway._auth import AuthError, Consumer, check_consumer_name
from keel.gateway._jwtkeys import JwksDocument, KeySet, load_key_file, parse_jwks
from keel.gateway._policy import JwtConfig

if TYPE_CHECKING:
    from keel.config import LiveConfig
    from keel.store import Store

__all__ = ["JwksDocument", "JwtConfig", "JwtKeys", "JwtVerifier", "KeySet"]

log = logging.getLogger("keel.gateway")

MAX_TOKEN_BYTES = 8192
"""Longer bearer tokens are refused before parsing."""
CACHE_SIZE = 4096
"""Verified tokens remembered per verifier."""
CACHE_TTL_S = 60.0
"""Longest a verification is reused (never past the token's own ``exp``)."""
_RETRY_S = 1.0


class _Jwks:
    """One followed JWKS document: its live binding and the parsed key sets per verifier."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.document = JwksDocument()
        self.version = 0
        self.loaded = asyncio.Event()

    def update(self, document: JwksDocument) -> None:
        self.document = document
        self.version += 1
        self.loaded.set()


class JwtVerifier:
    """Verifies tokens for one :class:`JwtConfig`; see the module docstring.

    Args:
        name: the verifier's name in the document (for messages).
        config: its settings.
        keys: a fixed key set (from ``key_file``), or None to read ``jwks``.
        jwks: the followed JWKS document (from ``jwks_config``).
        clock: wall time for the cache's expiry checks.
    """

    def __init__(
        self,
        name: str,
        config: JwtConfig,
        *,
        keys: KeySet | None = None,
        jwks: _Jwks | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.config = config
        self._keys = keys or KeySet()
        self._jwks = jwks
        self._clock = clock
        # time.time itself for the system clock: one frame less per request
        self._time = time.time if isinstance(clock, SystemClock) else clock.time
        self._cache: OrderedDict[bytes, tuple[Consumer, float, float, int]] = OrderedDict()
        self._audience = config.audience
        self._options: Any = {"require": ["exp", "iss", "aud"]}

    def key_set(self) -> KeySet:
        """The current keys (a JWKS is re-parsed once per change)."""
        jwks = self._jwks
        if jwks is not None and jwks.version != self._keys.version:
            self._keys = parse_jwks(self.config, jwks.document, jwks.name, jwks.version)
        return self._keys

    def verify(self, token: bytes) -> Consumer:
        """The consumer of a valid token.

        Raises:
            AuthError: anything wrong with the token (the reason names what, never the token).
        """
        keys = self._keys if self._jwks is None else self.key_set()
        hit = self._cache.get(token)
        if hit is not None:
            consumer, not_before, expires, version = hit
            now = self._time()
            if version == keys.version and not_before <= now < expires:
                self._cache.move_to_end(token)
                return consumer
            del self._cache[token]
        consumer = self._decode(token, keys)
        self._remember(token, consumer, keys.version)
        return consumer

    def _decode(self, token: bytes, keys: KeySet) -> Consumer:
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("token too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise AuthError("token algorithm not allowed")
        key = keys.pick(header.get("kid"), alg)
        config = self.config
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=config.issuer,
                leeway=config.leeway_s,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature invalid") from None
        except Exception:  # any other PyJWT or key error: refused, never a 500
            raise AuthError("invalid token") from None
        name = check_consumer_name(claims.get(config.consumer_claim))
        return Consumer(name, "jwt", None, claims)

    def _remember(self, token: bytes, consumer: Consumer, version: int) -> None:
        claims = consumer.claims
        leeway = self.config.leeway_s
        try:
            expires = min(float(claims["exp"]) + leeway, self._clock.time() + CACHE_TTL_S)
            not_before = float(claims.get("nbf", 0)) - leeway
        except (TypeError, ValueError):
            return
        self._cache[token] = (consumer, not_before, expires, version)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def __repr__(self) -> str:
        source = f"jwks={self.config.jwks_config!r}" if self._jwks else "key_file"
        return (
            f"JwtVerifier(name={self.name!r}, algorithms={self.config.algorithms}, {source}, "
            f"cached={len(self._cache)})"
        )


class JwtKeys:
    """The key sources of every JWT verifier of a gateway: key files and live JWKS documents.

    ``async with JwtKeys(store) as keys``; on each publish of the route document,
    ``keys.verifiers(document.jwt)`` builds the verifiers (reading key files,
    starting to follow JWKS documents not followed yet). ``await keys.ready()``
    waits until every followed JWKS has been loaded once.

    Args:
        store: where the config center keeps the JWKS documents.
        snapshot_dir: where the JWKS bindings keep their last good document.
        clock: time source for the verifiers' caches.
    """

    def __init__(
        self,
        store: Store | None,
        *,
        snapshot_dir: str | Path | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._store = store
        self._snapshot_dir = snapshot_dir
        self._clock = clock
        self._jwks: dict[str, _Jwks] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        tasks, self._tasks = self._tasks, None
        if tasks is not None:
            await tasks.__aexit__(et, e, tb)

    def verifiers(self, configs: Mapping[str, JwtConfig]) -> dict[str, JwtVerifier]:
        """Build one verifier per named config.

        Raises:
            ValidationError: a key file cannot be read or does not fit its algorithms,
                or a JWKS is named but this gateway has no store.
        """
        built: dict[str, JwtVerifier] = {}
        for name, config in configs.items():
            if config.key_file is not None:
                keys = load_key_file(config, config.key_file)
                built[name] = JwtVerifier(name, config, keys=keys, clock=self._clock)
            else:
                assert config.jwks_config is not None
                jwks = self._follow(config.jwks_config)
                built[name] = JwtVerifier(name, config, jwks=jwks, clock=self._clock)
        return built

    async def ready(self, timeout_s: float = 5.0) -> bool:
        """Wait until every followed JWKS was loaded once; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                for jwks in list(self._jwks.values()):
                    await jwks.loaded.wait()
        except TimeoutError:
            return False
        return True

    def _follow(self, name: str) -> _Jwks:
        jwks = self._jwks.get(name)
        if jwks is None:
            if self._tasks is None or self._store is None:
                raise ValidationError(
                    f"jwks_config {name!r} needs a started gateway with a store: "
                    "use 'async with JwtKeys(store)'"
                )
            jwks = self._jwks[name] = _Jwks(name)
            self._tasks.create_task(self._bind(jwks), name=f"keel-gateway-jwks-{name}")
        return jwks

    async def _bind(self, jwks: _Jwks) -> None:
        from keel.config import ConfigCenter

        assert self._store is not None
        center = ConfigCenter(self._store)
        while not self._stop.is_set():
            try:
                live: LiveConfig[JwksDocument] = await center.bind(
                    jwks.name, JwksDocument, environ={}, snapshot_dir=self._snapshot_dir
                )
            except StoreClosedError:
                return
            except (KeelError, OSError) as exc:
                log.warning("JWKS %s cannot be loaded (%s); retrying", jwks.name, exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_RETRY_S):
                        await self._stop.wait()
                continue
            try:
                jwks.update(live.value)
                live.on_change(lambda _old, new: jwks.update(new))
                await self._stop.wait()
            finally:
                await live.close()
            return

    def __repr__(self) -> str:
        return f"JwtKeys(jwks={sorted(self._jwks)})"

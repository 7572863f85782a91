"""JWT keys: a key file or a JWKS document turned into the key set a verifier uses.

Every key is checked when it is loaded, against the verifier's algorithms:
its type must fit (an RSA key for RS*/PS*, EC for ES*, Ed25519/Ed448 for
EdDSA, a secret for HS*), and it must not be weak by PyJWT's measure (HMAC
secrets at least as long as the hash, RSA at least 2048 bits). A JWKS key that
does not fit is skipped (and logged); an HMAC (``oct``) key never enters a
public-key verifier's set, and the reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms
from pydantic import BaseModel, ConfigDict

from keel.errors import ValidationError
from keel.gateway._auth import AuthError
from keel.gateway._policy import JwtConfig

__all__ = ["JwksDocument", "KeySet", "load_key_file", "parse_jwks"]

log = logging.getLogger("keel.gateway")

_ALGORITHMS = get_default_algorithms()


class JwksDocument(BaseModel):
    """A JWKS config document: ``{"keys": [<JWK>, ...]}`` (RFC 7517 §5)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    keys: list[dict[str, Any]] = []


@dataclass(frozen=True, slots=True)
class _Key:
    key: Any  # a cryptography public key, or bytes for HMAC
    algs: frozenset[str]  # the verifier's algorithms this key fits (its JWK "alg" only, if set)


@dataclass(frozen=True, slots=True)
class KeySet:
    """The keys one verifier may use: by ``kid``, and those without one.

    ``version`` changes whenever the keys change (cached results of older
    versions are not used).
    """

    by_kid: Mapping[str, _Key] = field(default_factory=dict)
    unnamed: tuple[_Key, ...] = ()
    version: int = 0

    def pick(self, kid: object, alg: str) -> _Key:
        """The key for a token's ``kid`` and ``alg``.

        Raises:
            AuthError: unknown kid, or no single key fits a token without kid.
        """
        if kid is not None:
            key = self.by_kid.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise AuthError("unknown key id (kid)")
            if alg not in key.algs:
                raise AuthError("the token's algorithm does not match its key")
            return key
        fits = [k for k in (*self.unnamed, *self.by_kid.values()) if alg in k.algs]
        if len(fits) != 1:
            raise AuthError("the token names no key id (kid) and more than one key fits")
        return fits[0]


def _check_key(config: JwtConfig, key: Any, where: str, alg: str | None = None) -> _Key:
    """Prepare ``key`` (its public half) for the algorithms it fits, or raise.

    Raises:
        ValidationError: the key fits none of the verifier's algorithms, or is too weak.
    """
    if hasattr(key, "public_key"):
        key = key.public_key()
    fits: list[str] = []
    problems: list[str] = []
    for name in [alg] if alg is not None else config.algorithms:
        algorithm = _ALGORITHMS[name]
        try:
            prepared = algorithm.prepare_key(key)
        except Exception as exc:  # PyJWT raises InvalidKeyError, TypeError, ValueError...
            problems.append(f"not a key for {name} ({exc})")
            continue
        weak = algorithm.check_key_length(prepared)
        if weak:
            problems.append(f"too weak for {name}: {weak}")
            continue
        key = prepared
        fits.append(name)
    if not fits:
        raise ValidationError(f"{where} is {'; '.join(problems)}")
    return _Key(key, frozenset(fits))


def load_key_file(config: JwtConfig, path: str) -> KeySet:
    """Read a PEM public key (or an HMAC secret file) into a one-key :class:`KeySet`.

    Raises:
        ValidationError: the file cannot be read or does not fit the algorithms.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError(
            f"JWT key_file {path!r} cannot be read ({exc.strerror}): check the path"
        ) from None
    if config.hmac:
        data = data.strip()
    return KeySet(unnamed=(_check_key(config, data, f"JWT key_file {path!r}"),))


def parse_jwks(config: JwtConfig, document: JwksDocument, name: str, version: int) -> KeySet:
    """The keys of a JWKS document that fit ``config``; unusable keys are skipped and logged."""
    by_kid: dict[str, _Key] = {}
    unnamed: list[_Key] = []
    for index, jwk in enumerate(document.keys):
        try:
            if (jwk.get("kty") == "oct") != config.hmac:
                continue  # an HMAC secret never verifies public-key tokens, and vice versa
            if jwk.get("use", "sig") != "sig":
                continue
            alg = jwk.get("alg")
            if alg is not None and alg not in config.algorithms:
                continue
            parsed = jwt.PyJWK(jwk, algorithm=alg or _default_alg(config, jwk))
            key = _check_key(config, parsed.key, f"key {index} of {name}", alg)
        except Exception as exc:  # a hand-edited JWKS: skip the bad key, keep the others
            log.warning("JWKS %s: skipping key %d (%s)", name, index, exc)
            continue
        kid = jwk.get("kid")
        if isinstance(kid, str) and kid:
            by_kid[kid] = key
        else:
            unnamed.append(key)
    return KeySet(by_kid, tuple(unnamed), version)


def _default_alg(config: JwtConfig, jwk: Mapping[str, Any]) -> str:
    """An algorithm PyJWK accepts for a JWK without ``alg`` (only to parse its key type)."""
    family = {"oct": "HS", "RSA": "RS", "EC": "ES", "OKP": "EdDSA"}.get(str(jwk.get("kty")), "")
    for alg in config.algorithms:
        if family and (alg.startswith(family) or (family == "RS" and alg.startswith("PS"))):
            return "RS256" if alg.startswith("PS") else alg
    return config.algorithms[0]

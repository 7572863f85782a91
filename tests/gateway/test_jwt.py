"""JWT verification: algorithms, claims, keys from a file and from a live JWKS document."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import ValidationError as PydanticValidationError

from keel.config import ConfigCenter
from keel.errors import ValidationError
from keel.gateway._auth import AuthConfig, Authenticator, AuthError
from keel.gateway._jwt import JwtKeys, JwtVerifier
from keel.gateway._jwtkeys import load_key_file
from keel.gateway._policy import JwtConfig
from keel.store import Store

AUD, ISS = "shop", "https://id.example"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


RSA_KEY = _rsa()
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "aud": AUD, "iss": ISS, "exp": now + 300, "iat": now, **over}


def _token(claims: dict[str, Any] | None = None, key: Any = RSA_KEY, **kw: Any) -> bytes:
    return jwt.encode(claims or _claims(), key, algorithm=kw.pop("alg", "RS256"), **kw).encode()


def _config(**over: Any) -> JwtConfig:
    return JwtConfig(
        **{"algorithms": ["RS256"], "audience": AUD, "issuer": ISS, "key_file": "x", **over}
    )


@pytest.fixture
def pem_file(tmp_path: Path) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(RSA_PUBLIC_PEM)
    return path


@pytest.fixture
def verifier(pem_file: Path) -> JwtVerifier:
    config = _config(key_file=str(pem_file))
    return JwtVerifier("main", config, keys=load_key_file(config, str(pem_file)))


def _refused(verifier: JwtVerifier, token: bytes, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert info.value.status == 401
    assert reason in info.value.reason
    assert info.value.headers[0][0] == b"www-authenticate"


def test_valid_token_gives_the_consumer(verifier: JwtVerifier) -> None:
    """A valid RS256 token is accepted; the consumer is its sub claim."""
    consumer = verifier.verify(_token())
    assert (consumer.name, consumer.method) == ("alice", "jwt")
    assert consumer.claims["aud"] == AUD


def test_expired_token_is_refused(verifier: JwtVerifier) -> None:
    """exp in the past is refused."""
    _refused(verifier, _token(_claims(exp=int(time.time()) - 60)), "expired")


def test_token_not_yet_valid_is_refused(verifier: JwtVerifier) -> None:
    """nbf in the future is refused."""
    _refused(verifier, _token(_claims(nbf=int(time.time()) + 120)), "not yet valid")


def test_wrong_audience_and_issuer_are_refused(verifier: JwtVerifier) -> None:
    """aud and iss must match the verifier's."""
    _refused(verifier, _token(_claims(aud="other")), "audience")
    _refused(verifier, _token(_claims(iss="https://evil.example")), "issuer")


def test_missing_required_claims_are_refused(verifier: JwtVerifier) -> None:
    """exp, aud and iss are required."""
    for claim in ("exp", "aud", "iss"):
        claims = _claims()
        del claims[claim]
        _refused(verifier, _token(claims), claim)


def test_alg_none_is_refused(verifier: JwtVerifier) -> None:
    """An unsigned token (alg: none) is refused."""
    token = jwt.encode(_claims(), "", algorithm="none").encode()
    _refused(verifier, token, "algorithm not allowed")
    forged = (
        base64.urlsafe_b64encode(b'{"alg":"None","typ":"JWT"}').rstrip(b"=")
        + b"."
        + base64.urlsafe_b64encode(json.dumps(_claims()).encode()).rstrip(b"=")
        + b"."
    )
    _refused(verifier, forged, "algorithm not allowed")


def test_hmac_token_signed_with_the_public_key_is_refused(verifier: JwtVerifier) -> None:
    """HS256 'signed' with the RSA public key as secret never passes an RS256 verifier."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(_claims()).encode()).rstrip(b"=")
    import hashlib
    import hmac

    signature = hmac.new(RSA_PUBLIC_PEM, header + b"." + payload, hashlib.sha256).digest()
    token = header + b"." + payload + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")
    _refused(verifier, token, "algorithm not allowed")


def test_bad_signature_and_garbage_are_refused(verifier: JwtVerifier) -> None:
    """A token signed by another key, and garbage, are refused."""
    _refused(verifier, _token(key=_rsa()), "signature")
    _refused(verifier, b"not.a.token", "malformed")
    _refused(verifier, b"x" * 9000, "too large")


def test_consumer_claim_must_be_printable(verifier: JwtVerifier) -> None:
    """A consumer that could not travel in a header is refused."""
    _refused(verifier, _token(_claims(sub="a\r\nx-consumer: admin")), "consumer claim")
    _refused(verifier, _token(_claims(sub="")), "consumer claim")


def test_cached_token_still_expires(verifier: JwtVerifier) -> None:
    """A verification served from the cache is not used past the token's exp."""
    exp = int(time.time()) + 1
    token = _token(_claims(exp=exp))
    assert verifier.verify(token).name == "alice"
    assert verifier.verify(token).name == "alice"  # from the cache
    while time.time() < exp + 0.05:  # at most ~1 s
        time.sleep(0.05)
    _refused(verifier, token, "expired")


def test_config_refuses_unsafe_settings() -> None:
    """none, mixed HS/RS, no or two key sources, bad names or bounds are refused."""
    bad: list[dict[str, Any]] = [
        {"algorithms": ["none"]},
        {"algorithms": []},
        {"algorithms": ["HS256", "RS256"]},
        {"algorithms": ["XX1"]},
        {"key_file": None},
        {"jwks_config": "jwks.json"},
        {"key_file": None, "jwks_config": "../jwks.json"},
        {"audience": []},
        {"leeway_s": -1},
    ]
    for over in bad:
        with pytest.raises(PydanticValidationError):
            _config(**over)


def test_key_file_must_fit_the_algorithms(tmp_path: Path) -> None:
    """A missing file, a short HMAC secret or a key of the wrong type fail at build."""
    with pytest.raises(ValidationError, match="cannot be read"):
        load_key_file(_config(), str(tmp_path / "missing.pem"))
    short = tmp_path / "secret"
    short.write_bytes(b"short")
    with pytest.raises(ValidationError, match="too weak"):
        load_key_file(_config(algorithms=["HS256"]), str(short))
    ec_pem = tmp_path / "ec.pem"
    ec_pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValidationError, match="not a key for RS256"):
        load_key_file(_config(), str(ec_pem))


def test_hmac_verifier_with_secret_file(tmp_path: Path) -> None:
    """HS256 with a secret file works, and refuses an RS256 token."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 40 + b"\n")
    config = _config(algorithms=["HS256"], key_file=str(secret))
    verifier = JwtVerifier("h", config, keys=load_key_file(config, str(secret)))
    assert verifier.verify(_token(key=b"s" * 40, alg="HS256")).name == "alice"
    _refused(verifier, _token(), "algorithm not allowed")


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


async def _publish_jwks(store: Store, keys: list[dict[str, Any]]) -> None:
    await ConfigCenter(store).publish("jwks.json", json.dumps({"keys": keys}))


async def test_jwks_rotation_through_the_config_center(store: Store) -> None:
    """kid picks the key; a published rotation applies without restart; unknown kid refused."""
    old, new = _rsa(), _rsa()
    await _publish_jwks(store, [_jwk(old, "k1")])
    config = _config(key_file=None, jwks_config="jwks.json")
    async with JwtKeys(store) as keys:
        verifier = keys.verifiers({"main": config})["main"]
        assert await keys.ready(timeout_s=10)
        auth = Authenticator({"main": verifier})
        route = AuthConfig(jwt="main")

        def call(token: bytes) -> str:
            consumer = auth.authenticate(route, [(b"authorization", b"Bearer " + token)])
            assert consumer is not None
            return consumer.name

        token_old = _token(key=old, headers={"kid": "k1"})
        assert call(token_old) == "alice"
        _refused(verifier, _token(key=new, headers={"kid": "k2"}), "unknown key id")

        await _publish_jwks(store, [_jwk(new, "k2")])
        token_new = _token(_claims(sub="bob"), key=new, headers={"kid": "k2"})
        async with asyncio.timeout(10):
            while True:
                try:
                    assert call(token_new) == "bob"
                    break
                except AuthError:
                    await asyncio.sleep(0.02)
        # the retired key no longer verifies, even for a token verified (cached) before
        _refused(verifier, token_old, "unknown key id")


async def test_jwks_skips_keys_that_do_not_fit(store: Store) -> None:
    """An oct key (HMAC) in the JWKS never verifies for an RS256 verifier."""
    good = _rsa()
    secret = base64.urlsafe_b64encode(RSA_PUBLIC_PEM).rstrip(b"=").decode()
    await _publish_jwks(
        store, [{"kty": "oct", "k": secret, "kid": "h"}, {"kty": "RSA"}, _jwk(good, "g")]
    )
    config = _config(key_file=None, jwks_config="jwks.json")
    async with JwtKeys(store) as keys:
        verifier = keys.verifiers({"main": config})["main"]
        assert await keys.ready(timeout_s=10)
        assert set(verifier.key_set().by_kid) == {"g"}
        assert verifier.verify(_token(key=good, headers={"kid": "g"})).name == "alice"


def test_authenticator_requires_credentials(verifier: JwtVerifier) -> None:
    """Missing credentials: 401 when required, anonymous when not; bad ones always 401."""
    auth = Authenticator({"main": verifier})
    with pytest.raises(AuthError):
        auth.authenticate(AuthConfig(jwt="main"), [])
    assert auth.authenticate(AuthConfig(jwt="main", required=False), []) is None
    with pytest.raises(AuthError):
        auth.authenticate(
            AuthConfig(jwt="main", required=False), [(b"authorization", b"Bearer bad")]
        )

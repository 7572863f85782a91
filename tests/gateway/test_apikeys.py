"""API keys on every backend: issue, verify, revoke (within a second), malformed records."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from keel.gateway._apikeys import KEYS_PREFIX, ApiKeys, add_key, list_keys, remove_key
from keel.gateway._auth import AuthConfig, Authenticator, AuthError
from keel.store import Store
from tests._util import eventually

ROUTE = AuthConfig(api_key=True)


async def _until(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait (bounded) until ``check()`` is true."""
    await eventually(check, timeout_s, every_s=0.01)


def _refused(keys: ApiKeys, secret: bytes) -> bool:
    try:
        keys.verify(secret)
    except AuthError:
        return True
    return False


async def test_valid_key_by_header_and_bearer(store: Store) -> None:
    """A fresh key authenticates from x-api-key and from Authorization: Bearer."""
    async with ApiKeys(store) as keys:
        key_id, secret = await keys.add("alice", note="ci")
        assert secret.startswith(f"keel_{key_id}_") and len(secret) >= 16 + 6 + 43
        await _until(lambda: len(keys) == 1)
        auth = Authenticator({}, keys)
        bearer = [(b"authorization", b"Bearer " + secret.encode())]
        for headers, hidden in (([(b"x-api-key", secret.encode())], False), (bearer, True)):
            consumer = auth.authenticate(ROUTE, headers)
            assert consumer is not None
            assert (consumer.name, consumer.method, consumer.key_id) == ("alice", "api_key", key_id)
            assert consumer.hide_authorization is hidden  # a key as a bearer stays here
        forwarding = AuthConfig(api_key=True, forward_api_key=True)
        consumer = auth.authenticate(forwarding, bearer)
        assert consumer is not None and not consumer.hide_authorization


async def test_revoked_key_stops_working_within_a_second(store: Store) -> None:
    """rm deletes the record; the follower drops the key at once (bounded wait 1 s)."""
    async with ApiKeys(store) as keys:
        key_id, secret = await keys.add("alice")
        await _until(lambda: not _refused(keys, secret.encode()))
        assert await keys.remove(key_id)
        assert not await keys.remove(key_id)
        await _until(lambda: _refused(keys, secret.encode()), timeout_s=1.0)


async def test_missing_wrong_and_malformed_keys_are_refused(store: Store) -> None:
    """No key: 401 when required; a wrong secret for a real id and garbage: 401."""
    async with ApiKeys(store) as keys:
        key_id, secret = await keys.add("alice")
        await _until(lambda: len(keys) == 1)
        auth = Authenticator({}, keys)
        with pytest.raises(AuthError) as info:
            auth.authenticate(ROUTE, [])
        assert info.value.status == 401
        tampered = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
        for bad in (tampered, "keel_nothex_x", "", "x" * 300, f"keel_{key_id}_"):
            with pytest.raises(AuthError):
                auth.authenticate(ROUTE, [(b"x-api-key", bad.encode())])
        assert auth.authenticate(AuthConfig(api_key=True, required=False), []) is None


async def test_only_the_hash_is_stored(store: Store) -> None:
    """The store holds a SHA-256 hash, never the secret; ls shows neither."""
    key_id, secret = await add_key(store, "alice", note="n")
    kv = await store.get(KEYS_PREFIX + key_id)
    assert kv is not None
    record = json.loads(kv.value)
    assert set(record) == {"id", "consumer", "hash", "created_at", "note"}
    assert record["hash"].startswith("sha256:")
    assert secret.encode() not in kv.value
    assert secret.split("_", 2)[2].encode() not in kv.value
    infos = await list_keys(store)
    assert [(i.id, i.consumer, i.note) for i in infos] == [(key_id, "alice", "n")]
    assert not hasattr(infos[0], "hash")


async def test_malformed_record_is_skipped_and_counted(store: Store) -> None:
    """A hand-written bad record grants nothing and does not stop the follower."""
    async with ApiKeys(store) as keys:
        await store.put(KEYS_PREFIX + "0123456789abcdef", b"{not json")
        await store.put(KEYS_PREFIX + "fedcba9876543210", json.dumps([1, 2]).encode())
        wrong_id = {"id": "aaaaaaaaaaaaaaaa", "consumer": "x", "hash": "sha256:" + "0" * 64}
        await store.put(KEYS_PREFIX + "bbbbbbbbbbbbbbbb", json.dumps(wrong_id).encode())
        await _until(lambda: keys.rejected >= 3)
        _, secret = await keys.add("bob")
        await _until(lambda: not _refused(keys, secret.encode()))
        assert len(keys) == 1
    rejected: list[object] = []
    assert [i.consumer for i in await list_keys(store, on_reject=rejected.append)] == ["bob"]
    assert len(rejected) == 3


async def test_keys_present_at_start_are_loaded(store: Store) -> None:
    """Keys written before the follower starts are verified from the first request."""
    _, secret = await add_key(store, "carol")
    async with ApiKeys(store) as keys:
        assert keys.verify(secret.encode()).name == "carol"
    assert not await remove_key(store, "not-an-id")


async def test_bad_consumer_or_note_is_refused(store: Store) -> None:
    """A consumer that could not travel in a header is bad input; nothing written."""
    from keel.errors import ValidationError

    for consumer in ("", "a\nb", "x" * 300, "é"):
        with pytest.raises(ValidationError):
            await add_key(store, consumer)
    with pytest.raises(ValidationError):
        await add_key(store, "ok", note="x" * 501)
    assert await list_keys(store) == []

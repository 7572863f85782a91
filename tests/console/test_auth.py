"""Console users, sessions and login: argon2 hashes, roles, rotation, rate limit, expiry."""

from __future__ import annotations

import msgspec
import pytest
from tests.console._core import CHEAP, PASSWORD, add_user, anonymous, app_for, log_in

from keel.console import Role, Users
from keel.console._ratelimit import LoginLimiter
from keel.console._sessions import COOKIE, SESSIONS_PREFIX, Sessions
from keel.console._users import USERS_PREFIX
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.store import Store


async def test_users_add_verify_and_never_store_the_password(store: Store) -> None:
    users = Users(store, hasher=CHEAP)
    await users.add("ada", PASSWORD, Role.ADMIN)
    raw = await store.get(USERS_PREFIX + "ada")
    assert raw is not None and PASSWORD.encode() not in raw.value
    assert msgspec.json.decode(raw.value)["hash"].startswith("$argon2id$")
    assert (await users.verify("ada", PASSWORD)) is not None
    assert await users.verify("ada", PASSWORD + "x") is None
    assert await users.verify("nobody", PASSWORD) is None
    assert "hash" not in repr(await users.get("ada")) and "argon2" not in repr(
        await users.get("ada")
    )
    with pytest.raises(ConflictError):
        await users.add("ada", PASSWORD, Role.VIEWER)


@pytest.mark.parametrize(
    ("name", "password"), [("Ada", PASSWORD), ("", PASSWORD), ("a/b", PASSWORD), ("ada", "short")]
)
async def test_bad_names_and_passwords_are_refused(store: Store, name: str, password: str) -> None:
    with pytest.raises(ValidationError):
        await Users(store, hasher=CHEAP).add(name, password, Role.VIEWER)
    assert (await store.range(USERS_PREFIX))[0] == []


async def test_roles_and_the_last_admin(store: Store) -> None:
    users = Users(store, hasher=CHEAP)
    await users.add("ada", PASSWORD, Role.ADMIN)
    await users.add("bob", PASSWORD, Role.OPERATOR)
    with pytest.raises(ConflictError, match="last admin"):
        await users.set_role("ada", Role.VIEWER)
    with pytest.raises(ConflictError, match="last admin"):
        await users.remove("ada")
    before, after = await users.set_role("bob", Role.ADMIN)
    assert (before.role, after.role) == (Role.OPERATOR, Role.ADMIN)
    await users.remove("ada")
    assert [u.name for u in await users.list()] == ["bob"]
    with pytest.raises(NotFoundError):
        await users.passwd("ada", PASSWORD)
    await users.passwd("bob", "a new password!")
    assert await users.verify("bob", PASSWORD) is None
    assert await users.verify("bob", "a new password!") is not None


async def test_a_malformed_user_record_is_skipped(store: Store) -> None:
    users = Users(store, hasher=CHEAP)
    await users.add("ada", PASSWORD, Role.ADMIN)
    await store.put(USERS_PREFIX + "eve", b'{"name": "eve", "role": "god", "hash": "$argon2id$x"}')
    await store.put(USERS_PREFIX + "mal", b"[1, 2")
    assert [u.name for u in await users.list()] == ["ada"]
    assert await users.get("eve") is None
    assert await users.verify("eve", PASSWORD) is None


async def test_sessions_store_only_a_hash_and_end(store: Store) -> None:
    sessions = Sessions(store, ttl_s=60)
    token, session = await sessions.create("ada")
    kvs, _ = await store.range(SESSIONS_PREFIX)
    assert len(kvs) == 1 and token not in kvs[0].key and token.encode() not in kvs[0].value
    assert kvs[0].lease == session.lease != 0
    assert (await sessions.get(token)) == session
    assert await sessions.get(token + "x") is None
    assert token not in repr(session) and session.csrf not in repr(session)
    await sessions.end(session)
    assert await sessions.get(token) is None
    assert await store.time_to_live(session.lease) is None


async def test_a_session_goes_with_its_lease(store: Store) -> None:
    sessions = Sessions(store, ttl_s=60)
    token, session = await sessions.create("ada")
    await store.revoke(session.lease)  # what expiry does, without waiting a minute
    assert await sessions.get(token) is None


async def test_end_all_ends_every_session_of_one_user(store: Store) -> None:
    sessions = Sessions(store, ttl_s=60)
    a1, _ = await sessions.create("ada")
    a2, _ = await sessions.create("ada")
    b, _ = await sessions.create("bob")
    assert await sessions.end_all("ada") == 2
    assert await sessions.get(a1) is None and await sessions.get(a2) is None
    assert await sessions.get(b) is not None


async def test_login_sets_a_strict_httponly_cookie_and_rotates_the_session(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    app = app_for(store)
    async with anonymous(app) as http:
        first = await log_in(http, "ada")
        assert first.status_code == 303 and first.headers["location"] == "/"
        cookie = next(c for c in first.headers.get_list("set-cookie") if c.startswith(COOKIE))
        attributes = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= attributes
        assert "secure" not in attributes  # plain HTTP on loopback
        token1 = http.cookies[COOKIE]
        second = await log_in(http, "ada")
        assert second.status_code == 303
        token2 = http.cookies[COOKIE]
    assert token1 != token2
    sessions = Sessions(store)
    assert await sessions.get(token1) is None  # the old session ended at the new login
    assert await sessions.get(token2) is not None


async def test_cookies_are_secure_when_served_remotely(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    app = app_for(store, host="10.1.2.3", allow_remote=True)  # TLS at a proxy in front
    async with anonymous(app, "https://console.example") as http:
        answer = await log_in(http, "ada")
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "secure" in cookie.lower()


async def test_wrong_passwords_are_rate_limited(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    app = app_for(store, login_per_user=3, login_window_s=600)
    async with anonymous(app) as http:
        codes = [(await log_in(http, "ada", "wrong password!")).status_code for _ in range(3)]
        assert codes == [401, 401, 401]
        limited = await log_in(http, "ada", PASSWORD)  # even the right one waits now
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert COOKIE not in http.cookies
        other = await log_in(http, "bob", "wrong password!")  # another name: its own count
        assert other.status_code == 401


def test_limiter_window_slides() -> None:
    now = [0.0]
    limiter = LoginLimiter(per_user=2, per_address=3, window_s=10, clock=lambda: now[0])
    limiter.failed("ada", "1.1.1.1")
    limiter.failed("ada", "1.1.1.1")
    assert limiter.retry_after("ada", "1.1.1.1") == pytest.approx(10)
    assert limiter.retry_after("ada", "2.2.2.2") == 0
    limiter.failed("bob", "1.1.1.1")
    assert limiter.retry_after("carl", "1.1.1.1") > 0  # the address's own limit
    now[0] = 10.5
    assert limiter.retry_after("ada", "1.1.1.1") == 0
    limiter.failed("ada", "1.1.1.1")
    limiter.succeeded("ada", "1.1.1.1")
    assert limiter.retry_after("ada", "1.1.1.1") == 0


async def test_login_without_the_form_token_is_refused(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    async with anonymous(app_for(store)) as http:
        answer = await http.post("/login", data={"username": "ada", "password": PASSWORD})
        assert answer.status_code == 403 and COOKIE not in http.cookies


async def test_logout_ends_the_session(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    async with anonymous(app_for(store)) as http:
        await log_in(http, "ada")
        token = http.cookies[COOKIE]
        page = await http.get("/")
        from tests.console._core import csrf_of

        answer = await http.post("/logout", data={"csrf": csrf_of(page.text)})
        assert answer.status_code == 303
    assert await Sessions(store).get(token) is None


async def test_the_one_time_setup_link_makes_the_first_admin(store: Store) -> None:
    from keel.console._audit import Audit

    app = app_for(store)
    token = app.state.console.setup.issue()
    async with anonymous(app) as http:
        assert (await http.get("/setup?token=wrong")).status_code == 404
        assert (await http.get("/setup")).status_code == 404
        form = await http.get(f"/setup?token={token}")
        assert form.status_code == 200 and "Create the first admin" in form.text
        data = {"token": token, "name": "ada", "password": PASSWORD, "confirm": PASSWORD}
        mismatch = await http.post("/setup", data={**data, "confirm": "something else"})
        assert mismatch.status_code == 400 and "differ" in mismatch.text
        cross = await http.post("/setup", data=data, headers={"origin": "https://evil.example"})
        assert cross.status_code == 404
        made = await http.post("/setup", data=data)
        assert made.status_code == 303 and made.headers["location"] == "/login"
        again = await http.post("/setup", data={**data, "name": "eve"})
        assert again.status_code == 404
        assert (await http.get(f"/setup?token={token}")).status_code == 404
        assert (await log_in(http, "ada")).status_code == 303
    users = await Users(store, hasher=CHEAP).list()
    assert [(u.name, u.role) for u in users] == [("ada", Role.ADMIN)]
    entries = await Audit(store).recent(5)
    assert [(e.actor, e.action, e.target) for e in entries] == [("setup", "user.add", "user/ada")]


async def test_the_setup_link_dies_once_a_user_exists(store: Store) -> None:
    app = app_for(store)
    token = app.state.console.setup.issue()
    await add_user(store, "bob", Role.ADMIN)  # as `keel console adduser` would, meanwhile
    async with anonymous(app) as http:
        assert (await http.get(f"/setup?token={token}")).status_code == 404
    assert not app.state.console.setup.active


async def test_two_racing_setup_requests_make_one_admin(store: Store) -> None:
    import asyncio

    app = app_for(store)
    token = app.state.console.setup.issue()
    async with anonymous(app) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/setup",
                    data={"token": token, "name": name, "password": PASSWORD, "confirm": PASSWORD},
                )
                for name in ("ada", "eve")
            )
        )
    assert sorted(a.status_code for a in answers) == [303, 404]
    assert len(await Users(store, hasher=CHEAP).list()) == 1


async def test_two_admins_demoting_each_other_leave_one_admin(store: Store) -> None:
    import asyncio

    users = Users(store, hasher=CHEAP)
    await users.add("ada", PASSWORD, Role.ADMIN)
    await users.add("bob", PASSWORD, Role.ADMIN)
    results = await asyncio.gather(
        users.set_role("ada", Role.VIEWER), users.remove("bob"), return_exceptions=True
    )
    assert sum(isinstance(r, ConflictError) for r in results) >= 1
    assert [u.name for u in await users.list() if u.role is Role.ADMIN]

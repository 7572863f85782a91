"""The core pages' actions over HTTP, every backend: overrides, CAS store writes, users, metrics."""

from __future__ import annotations

from tests.console._core import CHEAP, PASSWORD, add_user, anonymous, app_for, log_in, logged_in

import keel
from keel.console import Role, Users
from keel.console._audit import Audit
from keel.console._sessions import COOKIE, Sessions
from keel.registry import Instance, Overrides, Registry
from keel.store import Store

JSON = {"accept": "application/json"}


async def test_instance_overrides_from_the_services_page(store: Store) -> None:
    await add_user(store, "olga", Role.OPERATOR)
    async with Registry(store) as registry, logged_in(app_for(store), "olga") as client:
        await registry.register(
            Instance(service="orders", address="127.0.0.1", port=8001, id="o-1")
        )
        path = "/services/orders/o-1/override"
        drained = await client.post(path, {"op": "drain", "note": "disk alarm"}, headers=JSON)
        assert drained.status_code == 200 and drained.json()["override"]["draining"] is True
        weighted = await client.post(path, {"op": "weight", "weight": "7"}, headers=JSON)
        assert weighted.json()["override"]["weight"] == 7
        for bad in (
            {"op": "weight", "weight": "heavy"},
            {"op": "weight", "weight": "0"},
            {"op": "explode"},
        ):
            refused = await client.post(path, bad, headers=JSON)
            assert refused.status_code == 400 and refused.json()["ok"] is False, bad
        override = await Overrides(store).get("orders", "o-1")
        assert override is not None and override.weight == 7 and override.draining
        assert override.by == "olga"
        page = await client.get("/services")
        assert 'data-instance="orders/o-1"' in page.text and "draining" in page.text
        fragment = await client.get("/services?fragment=instances")
        assert fragment.text.lstrip().startswith('<section id="instances"')
        cleared = await client.post(path, {"op": "clear", "next": "/services?service=orders"})
        assert cleared.status_code == 303
        assert cleared.headers["location"] == "/services?service=orders"
        assert await Overrides(store).get("orders", "o-1") is None
    entries = await Audit(store).recent(10)
    assert [e.detail for e in reversed(entries)] == [
        {"op": "drain"},
        {"op": "weight"},
        {"op": "clear"},
    ]
    assert entries[0].before is not None and entries[0].after is None


async def test_store_writes_are_compare_and_swap(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    async with logged_in(app_for(store), "ada") as client:
        created = await client.post(
            "/store/put", {"key": "app/x", "value": "1", "expected": "0"}, headers=JSON
        )
        assert created.status_code == 200
        seen = (await store.get("app/x")).mod_revision  # type: ignore[union-attr]
        await store.put("app/x", b"2")  # someone else meanwhile
        stale = await client.post(
            "/store/put", {"key": "app/x", "value": "3", "expected": str(seen)}, headers=JSON
        )
        assert stale.status_code == 409 and f"you saw revision {seen}" in stale.json()["error"]
        again = await client.post(
            "/store/put", {"key": "app/x", "value": "4", "expected": "0"}, headers=JSON
        )
        assert again.status_code == 409
        current = await store.get("app/x")
        assert current is not None and current.value == b"2"
        deleted = await client.post(
            "/store/delete", {"key": "app/x", "expected": str(current.mod_revision)}, headers=JSON
        )
        assert deleted.status_code == 200 and await store.get("app/x") is None
        lease = await store.grant(60)
        revision = await store.put("app/leased", b"1", lease=lease.id)
        edited = await client.post(
            "/store/put", {"key": "app/leased", "value": "2", "expected": str(revision)}
        )
        assert edited.status_code == 303
        leased = await store.get("app/leased")
        assert leased is not None and leased.value == b"2" and leased.lease == lease.id
        shown = await client.get("/store/key?key=app/nothing")
        assert shown.status_code == 404


async def test_users_page_manages_users_and_their_sessions(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    app = app_for(store)
    async with logged_in(app, "ada") as admin:
        added = await admin.post(
            "/users/add",
            {"name": "bob", "role": "operator", "password": PASSWORD, "confirm": PASSWORD},
            headers=JSON,
        )
        assert added.status_code == 200
        mismatch = await admin.post(
            "/users/add",
            {"name": "carl", "role": "viewer", "password": PASSWORD, "confirm": PASSWORD + "!"},
            headers=JSON,
        )
        assert mismatch.status_code == 400
        async with anonymous(app) as bob:
            await log_in(bob, "bob")
            bob_token = bob.cookies[COOKIE]
        demoted = await admin.post("/users/bob/role", {"role": "viewer"}, headers=JSON)
        assert demoted.status_code == 200
        self_demote = await admin.post("/users/ada/role", {"role": "viewer"}, headers=JSON)
        assert self_demote.status_code == 409  # the last admin
        reset = await admin.post(
            "/users/bob/passwd", {"password": "another password", "confirm": "another password"}
        )
        assert reset.status_code == 303
        assert await Sessions(store).get(bob_token) is None  # a new password ends old sessions
        removed = await admin.post("/users/bob/remove", headers=JSON)
        assert removed.status_code == 200
        self_remove = await admin.post("/users/ada/remove", headers=JSON)
        assert self_remove.status_code == 400
    assert [u.name for u in await Users(store, hasher=CHEAP).list()] == ["ada"]
    entries = await Audit(store).recent(10)
    actions = [(e.action, e.target, e.before, e.after) for e in reversed(entries)]
    assert actions == [
        ("user.add", "user/bob", None, {"role": "operator"}),
        ("user.role", "user/bob", {"role": "operator"}, {"role": "viewer"}),
        ("user.passwd", "user/bob", None, None),
        ("user.remove", "user/bob", {"role": "viewer"}, None),
    ]
    assert all("argon2" not in str(e.to_record()) for e in entries)


async def test_a_removed_user_is_logged_out_at_once(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    await add_user(store, "bob", Role.ADMIN)
    app = app_for(store)
    async with logged_in(app, "bob") as bob:
        assert (await bob.get("/")).status_code == 200
        await Users(store, hasher=CHEAP).remove("bob")  # as `keel console rmuser` does
        assert (await bob.get("/")).status_code == 401


async def test_metrics_and_health_are_served(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    app = app_for(store)
    async with anonymous(app) as http:
        await log_in(http, "ada", "wrong password!")
        await log_in(http, "ada")
        metrics = await http.get("/metrics")
        assert (await http.get("/healthz")).text == "ok"
    assert metrics.status_code == 200
    assert 'keel_console_logins_total{outcome="failed"} 1.0' in metrics.text
    assert 'keel_console_logins_total{outcome="ok"} 1.0' in metrics.text
    assert "keel_console_request_seconds_bucket" in metrics.text


async def test_a_done_change_whose_audit_record_fails_says_so_and_stands(store: Store) -> None:
    """The change was committed: the answer is ok, with the audit miss named, not a 500."""
    await add_user(store, "ada", Role.ADMIN)
    app = app_for(store)
    elsewhere = await keel.connect("memory://")
    await elsewhere.close()
    app.state.console.audit = Audit(elsewhere)  # its store is closed: every record fails
    async with logged_in(app, "ada") as client:
        done = await client.post(
            "/store/put", {"key": "app/y", "value": "1", "expected": "0"}, headers=JSON
        )
        assert done.status_code == 200 and done.json()["ok"] is True
        assert "audit record could not be written" in done.json()["audit_error"]
        page = await client.post(
            "/store/put", {"key": "app/z", "value": "1", "expected": "0", "next": "/store"}
        )
        assert page.status_code == 303
        shown = await client.get("/store")
        assert "audit record could not be written" in shown.text
    assert (await store.get("app/y")) is not None and (await store.get("app/z")) is not None
    assert not any(e.action == "store.put" for e in await Audit(store).recent(10))
    counted = app.state.console.metrics.registry.get_sample_value(
        "keel_console_actions_total", {"action": "store.put", "outcome": "unaudited"}
    )
    assert counted == 2

"""Console security: login before everything, CSRF on every change, roles, headers, no secrets."""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from tests.console._core import (
    PASSWORD,
    add_user,
    anonymous,
    app_for,
    log_in,
    logged_in,
    serving,
)

import keel
from keel.console import ConsoleSettings, Role
from keel.console._guard import PUBLIC
from keel.console._sessions import COOKIE, SESSIONS_PREFIX
from keel.errors import ValidationError
from keel.store import Store


def _routes(app: Starlette) -> list[tuple[str, str]]:
    """(method, concrete path) of every route of the app, path parameters filled in."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, Mount) or not isinstance(route, Route):
            continue
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        found.extend((m, path) for m in sorted(route.methods or {"GET"}) if m != "HEAD")
    return found


def _change_routes(app: Starlette) -> list[str]:
    return [path for method, path in _routes(app) if method == "POST" and path not in PUBLIC]


async def test_every_page_and_endpoint_needs_a_session(store: Store) -> None:
    app = app_for(store)
    routes = [(m, p) for m, p in _routes(app) if p not in PUBLIC]
    assert len(routes) >= 12  # the core pages and actions at least
    async with anonymous(app) as http:
        for method, path in routes:
            plain = await http.request(method, path)
            assert plain.status_code == 401, (method, path, plain.status_code)
            if method == "GET" and path != "/live":
                page = await http.get(path, headers={"accept": "text/html"})
                assert page.status_code == 303, path
                assert page.headers["location"].startswith("/login?next=")
        http.cookies.set(COOKIE, "forged-token")
        forged = await http.get("/")
        assert forged.status_code == 401


async def test_a_change_without_the_csrf_token_is_refused(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    app = app_for(store)
    before = (await store.range(""))[1]
    async with logged_in(app, "ada") as client:
        for path in _change_routes(app):
            missing = await client.http.post(path, data={"op": "drain"})
            assert missing.status_code == 403, path
            wrong = await client.http.post(path, data={"csrf": "x" * 43, "op": "drain"})
            assert wrong.status_code == 403, path
        cross = await client.post(
            "/store/put",
            {"key": "a", "value": "b", "expected": "0"},
            headers={"origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        via_header = await client.http.post(
            "/store/put",
            data={"key": "a", "value": "b", "expected": "0"},
            headers={"x-csrf-token": client.csrf},
        )
        assert via_header.status_code == 303
    kvs, _ = await store.range("a")
    assert [kv.key for kv in kvs] == ["a"]  # only the request with the token changed anything
    audit_and_session_keys = [
        kv.key
        for kv in (await store.range("", revision=None))[0]
        if kv.mod_revision > before and not kv.key.startswith(("console/", "a"))
    ]
    assert audit_and_session_keys == []


async def test_a_viewer_cannot_change_anything(store: Store) -> None:
    await add_user(store, "vic", Role.VIEWER)
    app = app_for(store)
    async with logged_in(app, "vic") as client:
        for path in _change_routes(app):
            if path == "/logout":
                continue
            answer = await client.post(path, {"op": "drain", "key": "k", "value": "v"})
            assert answer.status_code == 403, path
        services = await client.get("/services")
        assert services.status_code == 200
        users = await client.get("/users")
        assert users.status_code == 403
    assert (await store.range("k"))[0] == []


async def test_security_headers(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    app = app_for(store)
    async with logged_in(app, "ada") as client:
        for path in ("/", "/services", "/store", "/audit", "/users", "/login"):
            answer = await client.get(path)
            assert answer.status_code == 200, path
            csp = answer.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["cache-control"] == "no-store"
            assert "<script>" not in answer.text and " on" + "click=" not in answer.text
            assert 'style="' not in answer.text
        static = await client.get("/static/console.js")
        assert static.status_code == 200 and "no-store" not in static.headers.get(
            "cache-control", ""
        )


async def test_no_secret_in_pages_or_logs(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    await add_user(store, "ada", Role.ADMIN)
    await add_user(store, "bob", Role.OPERATOR)
    app = app_for(store)
    caplog.set_level(logging.DEBUG)
    async with anonymous(app) as other:
        await log_in(other, "bob")
        bob_token = other.cookies[COOKIE]
    async with logged_in(app, "ada") as client:
        async with anonymous(app) as stranger:
            await log_in(stranger, "ada", "wrong password 1")
        users, _ = await store.range("console/users/")
        sessions, _ = await store.range(SESSIONS_PREFIX)
        secrets = [PASSWORD, "wrong password 1", bob_token]
        secrets += [kv.value.decode().split('"hash":"')[1].split('"')[0] for kv in users]
        pages = ["/", "/services", "/audit", "/users", "/store?prefix=console/"]
        pages += [f"/store/key?key={kv.key}" for kv in users + sessions]
        listing = await client.get("/store?prefix=console/")
        assert SESSIONS_PREFIX not in listing.text  # not even the hashes of tokens are listed
        for path in pages:
            answer = await client.get(path)
            assert answer.status_code in (200, 404), path
            for secret in secrets:
                assert secret not in answer.text, (path, secret[:8])
        shown = await client.get("/store/key?key=console/users/bob")
        assert "hidden" in shown.text
    for secret in (PASSWORD, "wrong password 1", bob_token):
        assert secret not in caplog.text


async def test_hostile_store_content_is_escaped(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    await store.put("evil/<script>x</script>", b'{"a": "<img src=x onerror=alert(1)>"}')
    async with logged_in(app_for(store), "ada") as client:
        listing = await client.get("/store?prefix=evil/")
        shown = await client.get("/store/key", params={"key": "evil/<script>x</script>"})
    for page in (listing.text, shown.text):
        assert "<script>x" not in page and "<img src=x" not in page
        assert "&lt;script&gt;" in page or "&lt;img" in page


async def test_the_store_browser_never_writes_the_consoles_own_records(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    async with logged_in(app_for(store), "ada") as client:
        for key in ("console/users/eve", "console/audit/0/1", "console/sessions/x"):
            answer = await client.post(
                "/store/put",
                {"key": key, "value": "{}", "expected": "0"},
                headers={"accept": "application/json"},
            )
            assert answer.status_code == 400, key
    assert await store.get("console/users/eve") is None


async def test_redirects_stay_on_the_console(store: Store) -> None:
    await add_user(store, "ada", Role.ADMIN)
    async with anonymous(app_for(store)) as http:
        form = await http.get("/login?next=//evil.example/x")
        assert "evil.example" not in form.text
        for target in ("//evil.example", "https://evil.example/", "/\\evil.example"):
            from tests.console._core import csrf_of

            page = await http.get("/login")
            answer = await http.post(
                "/login",
                data={
                    "csrf": csrf_of(page.text),
                    "username": "ada",
                    "password": PASSWORD,
                    "next": target,
                },
            )
            assert answer.headers["location"] == "/", target


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "console.example"])
def test_a_remote_bind_needs_tls_or_a_flag(host: str) -> None:
    with pytest.raises(ValidationError, match="without TLS"):
        ConsoleSettings(host=host)
    assert ConsoleSettings(host=host, allow_remote=True).secure_cookies
    assert ConsoleSettings(host=host, tls_cert="c.pem", tls_key="k.pem").tls
    assert not ConsoleSettings().secure_cookies  # loopback, plain HTTP
    with pytest.raises(ValidationError, match="both"):
        ConsoleSettings(tls_cert="c.pem")


async def test_a_loopback_console_answers_only_loopback_host_names(store: Store) -> None:
    app = app_for(store)
    async with anonymous(app) as http:
        for host in ("127.0.0.1:8470", "localhost:8470", "[::1]:8470", "localhost"):
            assert (await http.get("/healthz", headers={"host": host})).status_code == 200, host
        for host in ("evil.example", "evil.example:8470", "127.0.0.1.evil.example"):
            answer = await http.get("/metrics", headers={"host": host})
            assert answer.status_code == 421, host
    async with anonymous(app_for(store, host="10.0.0.5", allow_remote=True)) as http:
        assert (await http.get("/healthz", headers={"host": "console.example"})).status_code == 200


def _self_signed(directory: Path) -> tuple[str, str]:
    """A throwaway certificate for 127.0.0.1 (cert file, key file)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


async def test_the_console_serves_https_with_secure_cookies(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    async with keel.connect("memory://") as store:
        await add_user(store, "ada", Role.ADMIN)
        async with (
            serving(store, tls_cert=cert, tls_key=key) as url,
            httpx.AsyncClient(base_url=url, verify=ssl.create_default_context(cafile=cert)) as http,
        ):
            assert url.startswith("https://127.0.0.1:")
            answer = await log_in(http, "ada")
            assert answer.status_code == 303
            cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE))
            assert "secure" in cookie.lower() and "httponly" in cookie.lower()
            page = await http.get("/")
            assert page.status_code == 200
            assert page.headers["strict-transport-security"].startswith("max-age=")


async def test_a_store_outage_answers_503_not_a_crash(tmp_path: Path) -> None:
    async with keel.connect(f"sqlite:///{tmp_path / 'k.db'}") as store:
        await add_user(store, "ada", Role.ADMIN)
        app = app_for(store)
        async with logged_in(app, "ada") as client:
            await store.close()
            answer = await client.get("/")
            assert answer.status_code == 503 and "store unavailable" in answer.text

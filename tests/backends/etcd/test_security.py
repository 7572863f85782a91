"""The etcd backend over TLS with client certificates, and with user/password auth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import keel
from keel.backends.etcd import EtcdStore
from keel.errors import AuthError, KeelError
from keel.testing import EtcdCluster, EtcdTLS

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and an unrelated CA."""
    base = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("keel-client@example.com")
    files = {
        "ca": base / "ca.pem",
        "other_ca": base / "other-ca.pem",
        "server_cert": base / "server.pem",
        "server_key": base / "server-key.pem",
        "client_cert": base / "client.pem",
        "client_key": base / "client-key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    other_ca.cert_pem.write_to_path(str(files["other_ca"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    Path(files["server_cert"]).write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    Path(files["client_cert"]).write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    return {name: str(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def tls_cluster(pki: dict[str, str]) -> Iterator[EtcdCluster]:
    """One etcd member serving TLS that requires client certificates from our CA."""
    tls = EtcdTLS(cert_file=pki["server_cert"], key_file=pki["server_key"], ca_file=pki["ca"])
    with EtcdCluster(1, tls=tls) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def auth_cluster() -> Iterator[EtcdCluster]:
    """One etcd member with auth enabled and a root user."""
    with EtcdCluster(1) as cluster:
        cluster.enable_auth("s3cret")
        yield cluster


def _tls_url(cluster: EtcdCluster, **files: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"timeout_s": "3", **files}.items())
    return f"{cluster.url}?{query}"


async def test_the_right_client_certificate_connects(
    tls_cluster: EtcdCluster, pki: dict[str, str]
) -> None:
    """With our CA and a client certificate it signed, the store works over TLS."""
    url = _tls_url(
        tls_cluster, ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"]
    )
    async with asyncio.timeout(20), keel.connect(url) as store:
        rev = await store.put("tls/k", b"v")
        kv = await store.get("tls/k")
        async with store.watch("tls/k") as events:
            await store.put("tls/k", b"w")
            event = await anext(events)
    assert kv is not None and kv.mod_revision == rev
    assert event.kv.value == b"w"


async def test_no_client_certificate_fails_clearly(
    tls_cluster: EtcdCluster, pki: dict[str, str]
) -> None:
    """Without a client certificate the connect fails naming cert_file/key_file."""
    with pytest.raises(KeelError) as info:
        async with asyncio.timeout(20):
            await keel.connect(_tls_url(tls_cluster, ca_file=pki["ca"]))
    assert isinstance(info.value, AuthError), info.value
    assert "cert_file" in str(info.value)
    assert tls_cluster.endpoints[0] in str(info.value)


async def test_an_untrusted_server_certificate_fails_clearly(
    tls_cluster: EtcdCluster, pki: dict[str, str]
) -> None:
    """With the wrong CA the connect fails naming ca_file."""
    url = _tls_url(
        tls_cluster,
        ca_file=pki["other_ca"],
        cert_file=pki["client_cert"],
        key_file=pki["client_key"],
    )
    with pytest.raises(AuthError, match="ca_file") as info:
        async with asyncio.timeout(20):
            await keel.connect(url)
    assert tls_cluster.endpoints[0] in str(info.value)


async def test_the_right_password_connects(auth_cluster: EtcdCluster) -> None:
    """root with the right password reads and writes."""
    url = auth_cluster.url.replace("etcd://", "etcd://root:s3cret@") + "?root=/auth-ok/"
    async with asyncio.timeout(20), keel.connect(url) as store:
        await store.put("k", b"v")
        kv = await store.get("k")
        lease = await store.grant(30)
        assert await store.keepalive(lease.id) == 30
    assert kv is not None and kv.value == b"v"


async def test_a_wrong_password_fails_with_auth_error(auth_cluster: EtcdCluster) -> None:
    """A wrong password is an AuthError that says to check user:password."""
    url = auth_cluster.url.replace("etcd://", "etcd://root:wrong@")
    with pytest.raises(AuthError, match="user name or password"):
        async with asyncio.timeout(20):
            await keel.connect(url)


async def test_no_credentials_on_an_auth_cluster_fails_with_auth_error(
    auth_cluster: EtcdCluster,
) -> None:
    """Connecting without credentials to a cluster with auth says to add user:password."""
    with pytest.raises(AuthError, match="user:password"):
        async with asyncio.timeout(20):
            await keel.connect(auth_cluster.url)


async def test_an_expired_token_is_renewed_transparently() -> None:
    """When etcd forgets the auth token (TTL 1 s), calls and watches re-authenticate."""
    with EtcdCluster(1, extra_args=("--auth-token-ttl=1",)) as cluster:
        cluster.enable_auth("s3cret")
        url = cluster.url.replace("etcd://", "etcd://root:s3cret@") + "?root=/ttl/"
        async with asyncio.timeout(30), keel.connect(url) as store:
            assert isinstance(store, EtcdStore)
            await store.put("k", b"1")
            await asyncio.sleep(2.5)
            rev = await store.put("k", b"2")
            async with store.watch("k", start_revision=rev) as events:
                event = await anext(events)
            kv = await store.get("k")
            renewed = store.statistics().authentications
    assert event.revision == rev and kv is not None and kv.value == b"2"
    assert renewed >= 2

"""Each TLS mistake in an etcd store URL gets an error naming its cause and its fix, at once."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import pytest
import trustme

import keel
from keel.errors import AuthError, KeelError, ValidationError
from keel.testing import EtcdCluster, EtcdTLS, free_port

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

# Long enough that an error arriving well before it was not a timeout.
_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for etcd.internal only, a client certificate, and bad files."""
    base = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("etcd.internal")
    client, stranger = ca.issue_cert("keel@example.com"), ca.issue_cert("other@example.com")
    paths = {name: base / f"{name}.pem" for name in ("ca", "other_ca", "server", "server_key")}
    paths |= {name: base / f"{name}.pem" for name in ("client", "client_key", "stranger_key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other_ca.cert_pem.write_to_path(str(paths["other_ca"]))
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    stranger.private_key_pem.write_to_path(str(paths["stranger_key"]))
    paths["server"].write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    paths["client"].write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    paths["not_pem"] = base / "notes.txt"
    paths["not_pem"].write_text("this is not a certificate\n")
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def tls_etcd(pki: dict[str, str]) -> Iterator[EtcdCluster]:
    """One etcd member serving TLS with a certificate for the name etcd.internal."""
    tls = EtcdTLS(cert_file=pki["server"], key_file=pki["server_key"])
    with EtcdCluster(1, tls=tls) as cluster:
        yield cluster


def _url(endpoint: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"timeout_s": str(_TIMEOUT_S), **options}.items())
    return f"etcd://{endpoint}?{query}"


async def _connect_error(url: str) -> KeelError:
    """The error connecting to ``url`` raises, checked to come well before the timeout."""
    started = time.monotonic()
    with pytest.raises(KeelError) as info:
        async with asyncio.timeout(_TIMEOUT_S * 2):
            await keel.connect(url)
    assert time.monotonic() - started < _TIMEOUT_S / 2, info.value
    return info.value


async def test_a_host_the_certificate_does_not_list_names_server_name(
    tls_etcd: EtcdCluster, pki: dict[str, str]
) -> None:
    """Connecting by IP to a certificate for etcd.internal says so; server_name= fixes it."""
    endpoint = tls_etcd.endpoints[0]
    error = await _connect_error(_url(endpoint, ca_file=pki["ca"]))
    assert isinstance(error, AuthError), error
    assert "certificate name mismatch" in str(error) and "?server_name=" in str(error)
    assert "127.0.0.1" in str(error)
    fixed = _url(endpoint, ca_file=pki["ca"], server_name="etcd.internal", root="/tlsname/")
    async with asyncio.timeout(20), keel.connect(fixed) as store:
        rev = await store.put("k", b"v")
        kv = await store.get("k")
    assert kv is not None and kv.mod_revision == rev


async def test_a_wrong_server_name_is_named(tls_etcd: EtcdCluster, pki: dict[str, str]) -> None:
    """A server_name the certificate does not list is a name mismatch naming that option."""
    url = _url(tls_etcd.endpoints[0], ca_file=pki["ca"], server_name="wrong.example")
    error = await _connect_error(url)
    assert isinstance(error, AuthError), error
    assert "certificate name mismatch" in str(error)
    assert "server_name=wrong.example" in str(error)


async def test_an_unknown_ca_says_to_give_the_right_ca_file(
    tls_etcd: EtcdCluster, pki: dict[str, str]
) -> None:
    """A server certificate from another CA: AuthError naming ca_file and OpenSSL's reason."""
    url = _url(tls_etcd.endpoints[0], ca_file=pki["other_ca"], server_name="etcd.internal")
    error = await _connect_error(url)
    assert isinstance(error, AuthError), error
    assert "does not trust" in str(error) and "ca_file" in str(error)
    assert "issuer" in str(error)


async def test_plain_text_to_a_tls_port_says_to_add_ca_file(tls_etcd: EtcdCluster) -> None:
    """etcd:// without TLS options against a TLS listener: 'speaks TLS', add ca_file."""
    error = await _connect_error(_url(tls_etcd.endpoints[0]))
    assert isinstance(error, AuthError), error
    assert "speaks TLS" in str(error) and "?ca_file=" in str(error)


async def test_tls_to_a_plain_port_says_it_does_not_speak_tls(
    etcd_cluster: EtcdCluster, pki: dict[str, str]
) -> None:
    """TLS options against a plain listener: 'does not speak TLS', drop the TLS options."""
    for options in ({"ca_file": pki["ca"]}, {"tls": "1"}):
        error = await _connect_error(_url(etcd_cluster.endpoints[0], **options))
        assert isinstance(error, AuthError), error
        assert "does not speak TLS" in str(error) and "drop ca_file" in str(error)


async def test_bad_tls_files_are_refused_before_connecting(pki: dict[str, str]) -> None:
    """Non-certificate CA/cert files and a mismatched key are refused before any connection."""
    endpoint = f"127.0.0.1:{free_port()}"
    client = {"ca_file": pki["ca"], "cert_file": pki["client"]}
    cases = [
        ({"ca_file": pki["not_pem"]}, "ca_file=.* is not a PEM certificate"),
        ({**client, "key_file": pki["stranger_key"]}, "key_file=.* does not match cert_file"),
        (
            {"ca_file": pki["ca"], "cert_file": pki["not_pem"], "key_file": pki["client_key"]},
            "cert_file=.* is not a PEM certificate",
        ),
        ({**client, "key_file": pki["not_pem"]}, "key_file=.* is not an unencrypted PEM"),
    ]
    for options, message in cases:
        error = await _connect_error(_url(endpoint, **options))
        assert isinstance(error, ValidationError), error
        assert re.search(message, str(error)), error

"""Naming the cause of a failed connect: certificates, names, plain/TLS mix-ups.

:func:`diagnose` turns a connect failure's gRPC details into the one error
that says what to fix (see :func:`._errors.connect_failure`), or None when
the failure may be transient and worth another try.

gRPC reports a client and a server that disagree about TLS as a closed
socket ("Socket closed", "Handshake read failed"), exactly as it reports a
member that died mid-connect. When a connect fails that way, the connection
opens one more socket and tries a TLS handshake (verifying nothing: only the
protocol matters) to tell the two apart, so the user learns which side of
the URL to fix instead of waiting for the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from keel.backends.etcd._errors import CLOSED_IN_HANDSHAKE, connect_failure, tls_mismatch
from keel.backends.etcd._settings import EtcdSettings
from keel.errors import KeelError

__all__ = ["definite_failure", "diagnose", "speaks_tls"]


def definite_failure(endpoint: str, details: str, settings: EtcdSettings) -> KeelError | None:
    """The error for a failure's details that will not fix itself, else None."""
    return connect_failure(endpoint, details, tls=settings.secure, server_name=settings.server_name)


async def diagnose(
    endpoint: str, details: str, settings: EtcdSettings, asked: set[str]
) -> KeelError | None:
    """The definite error behind a connect failure, asking the server if need be.

    A socket closed during the handshake may be a dying member or a
    plain/TLS mix-up: the server is asked once per endpoint in ``asked``.
    """
    if (error := definite_failure(endpoint, details, settings)) is not None:
        return error
    if endpoint in asked or not any(m in details.lower() for m in CLOSED_IN_HANDSHAKE):
        return None
    asked.add(endpoint)
    tls = await speaks_tls(endpoint, timeout_s=min(1.0, settings.timeout_s))
    if tls is not None and tls is not settings.secure:
        return tls_mismatch(endpoint, tls=settings.secure)
    return None


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the question is the protocol, not the peer
    return context


async def speaks_tls(endpoint: str, timeout_s: float = 1.0) -> bool | None:
    """Whether the server at ``host:port`` answers a TLS handshake.

    Returns:
        True if it completed a handshake or answered with a TLS alert, False
        if it closed or reset the connection, or answered something else,
        None if it could not be asked (refused, timed out).
    """
    host, _, port = endpoint.rpartition(":")
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(
                host.strip("[]"), int(port), ssl=_context(), ssl_handshake_timeout=timeout_s
            )
    except (ssl.SSLEOFError, ConnectionResetError, asyncio.IncompleteReadError):
        return False  # closed on a ClientHello: etcd's plain listener does that
    except ssl.SSLError as exc:
        return "alert" in str(exc).lower()  # an alert is TLS; "wrong version number" is not
    except (OSError, TimeoutError, ValueError):
        return None
    writer.close()
    # The answer is known; how the socket closes does not change it.
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True

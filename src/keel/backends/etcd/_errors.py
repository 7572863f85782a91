"""gRPC failures of etcd, sorted and translated into keel's error tree.

Two questions are asked of every failed call, and both are answered here as
pure functions of the gRPC status so the retry rules can be read in one place:

- *what kind of failure is it* (:func:`classify`): was the request certainly
  not applied (the connection never came up, or the member refused it before
  proposing it to raft), was it lost with an unknown outcome (connection
  dropped mid-call, deadline, "request timed out"), did the auth token
  expire, or is it a definite answer from etcd (lease not found, compacted...);
- *which keel error does the caller see* (:func:`translate`).

etcd reports its own errors as gRPC statuses whose details start with
``etcdserver:``; the strings matched below are those of etcd's
``api/v3rpc/rpctypes`` package, stable across 3.x releases.
"""

from __future__ import annotations

import enum
import re

import grpc

from keel.errors import (
    AuthError,
    CompactedError,
    KeelError,
    LeaseNotFoundError,
    StoreUnavailableError,
    ValidationError,
)

__all__ = [
    "CLOSED_IN_HANDSHAKE",
    "Failure",
    "classify",
    "connect_failure",
    "name_mismatch",
    "permission_denied",
    "tls_mismatch",
    "translate",
    "unknown_outcome",
]


class Failure(enum.Enum):
    """How a failed call may be handled."""

    UNSENT = "unsent"
    """The request certainly was not applied: any call may be retried elsewhere."""
    LOST = "lost"
    """The member failed mid-call: reads may be retried, a write's outcome is unknown."""
    TOKEN = "token"
    """The auth token is invalid or expired: authenticate again and retry."""
    ANSWER = "answer"
    """etcd answered with a definite error: translate it and raise."""


# Rejected by the member before the request reached raft (etcd rpctypes).
_UNSENT_DETAILS = (
    "failed to connect to all addresses",
    "etcdserver: no leader",
    "etcdserver: too many requests",
    "etcdserver: not capable",
)
_UNTRUSTED_SERVER = ("certificate_verify_failed", "certificate verify failed")
# A server that rejects the client certificate aborts the TLS 1.3 session after
# the client considers the handshake done; gRPC then reports the next read as
# "Unwrap failed (TSI_DATA_CORRUPTED)" (the alert itself only reaches its log).
_CLIENT_CERT_REFUSED = (
    "certificate_required",
    "bad_certificate",
    "unknown_ca",
    "tsi_data_corrupted",
)
_PLAIN_VS_TLS = ("wrong_version_number", "http_request", "record_overflow")
# The server certificate does not list the name checked (grpc >= 1.5x says
# "Hostname Verification Check failed"; older releases "... is not in peer certificate").
_NAME_MISMATCH = ("hostname verification check failed", "is not in peer certificate")
# grpc could not build a TLS context from the files (they are checked before
# connecting, see EtcdSettings.credentials, so this is a last resort).
_BAD_TLS_FILES = ("failed to create security handshaker", "handshaker factory creation failed")
# What a socket closed during the handshake looks like: ambiguous (a dying
# member also closes sockets), so the connection asks the server (see _tls).
CLOSED_IN_HANDSHAKE = ("socket closed", "handshake read failed", "connection reset")


def _details(exc: grpc.aio.AioRpcError) -> str:
    return str(exc.details() or "")


def classify(exc: grpc.aio.AioRpcError) -> Failure:
    """Sort a failed call (pure: depends only on the status code and details)."""
    code, details = exc.code(), _details(exc)
    if code is grpc.StatusCode.UNAUTHENTICATED and "invalid auth token" in details:
        return Failure.TOKEN
    if any(marker in details for marker in _UNSENT_DETAILS):
        return Failure.UNSENT
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    ):
        return Failure.LOST
    return Failure.ANSWER


def connect_failure(
    endpoint: str, details: str, *, tls: bool, server_name: str | None = None
) -> KeelError | None:
    """The error for a definite TLS problem in a connect failure's details, else None.

    None means the failure may be transient (refused, reset, timed out) and
    is worth another try; an error returned here will not fix itself.
    ``server_name`` is the URL's ``server_name`` option, if any.
    """
    low = details.lower()
    if any(marker in low for marker in _NAME_MISMATCH):
        return name_mismatch(endpoint, server_name)
    if any(marker in low for marker in _UNTRUSTED_SERVER):
        why = re.search(r"certificate[_ ]verify[_ ]failed:\s*([^:]+)", details, re.IGNORECASE)
        reason = f" ({why.group(1).strip()})" if why else ""
        return AuthError(
            f"etcd at {endpoint} presented a certificate this client does not trust{reason}: "
            f"give ?ca_file=<the CA that signed the server certificate> in the store URL"
        )
    if any(marker in low for marker in _BAD_TLS_FILES):
        return ValidationError(
            "grpc could not use the TLS files: check that ca_file is a PEM certificate and "
            "that key_file is the unencrypted key of cert_file"
        )
    if tls and any(marker in low for marker in _CLIENT_CERT_REFUSED):
        return AuthError(
            f"etcd at {endpoint} refused the client certificate (or its absence): "
            f"check cert_file/key_file and ca_file"
        )
    if any(marker in low for marker in _PLAIN_VS_TLS):
        return tls_mismatch(endpoint, tls=tls)
    return None


def name_mismatch(endpoint: str, server_name: str | None) -> AuthError:
    """The error for a server certificate that does not list the name checked."""
    checked = (
        f"server_name={server_name}"
        if server_name
        else f"the host {endpoint.rpartition(':')[0].strip('[]')}"
    )
    return AuthError(
        f"certificate name mismatch: the certificate of etcd at {endpoint} is not valid for "
        f"{checked}: connect with a name the certificate lists, "
        f"or add ?server_name=<that name> to the store URL"
    )


def tls_mismatch(endpoint: str, *, tls: bool) -> AuthError:
    """The error for a client and a server that disagree about TLS (``tls``: the client's)."""
    if tls:
        return AuthError(
            f"etcd at {endpoint} does not speak TLS on this port: drop ca_file, cert_file, "
            f"key_file and tls from the store URL, or use the server's TLS port"
        )
    return AuthError(
        f"etcd at {endpoint} speaks TLS on this port: add ?ca_file=<the CA that signed its "
        f"certificate> to the store URL (or ?tls=1 if a public CA signed it)"
    )


def translate(
    exc: grpc.aio.AioRpcError, endpoint: str, what: str, *, root: str | None = None
) -> KeelError:
    """The keel error for a definite answer from etcd.

    ``what`` names the call; ``root`` (the store's root prefix), when given,
    is named in a permission error as the prefix to grant.
    """
    code, details = exc.code(), _details(exc)
    if "requested lease not found" in details:
        return LeaseNotFoundError(f"{what}: lease not found (expired or revoked): grant a new one")
    if "required revision has been compacted" in details:
        # etcd does not say where the compaction point is; the caller fills it in.
        return CompactedError(0, f"{what}: the requested revision is compacted")
    if "future revision" in details:
        return ValidationError(f"{what}: the revision is in the future (after the current one)")
    if "authentication failed" in details:
        return AuthError(
            f"etcd at {endpoint} refused the user name or password: check user:password "
            f"in the store URL"
        )
    if "user name is empty" in details or code is grpc.StatusCode.UNAUTHENTICATED:
        return AuthError(
            f"etcd at {endpoint} requires authentication: put user:password@ in the store URL"
        )
    if "permission denied" in details or code is grpc.StatusCode.PERMISSION_DENIED:
        return permission_denied(endpoint, what, root)
    if "request is too large" in details:
        return ValidationError(f"{what}: request too large for etcd (--max-request-bytes)")
    if "too many operations in txn" in details:
        return ValidationError(f"{what}: too many operations for etcd (--max-txn-ops)")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return ValidationError(f"{what}: etcd refused the request: {details}")
    return StoreUnavailableError(f"etcd at {endpoint} failed {what}: {code.name}: {details}")


def permission_denied(endpoint: str, what: str, root: str | None) -> AuthError:
    """The error for a call the user's roles do not allow, naming the prefix to grant."""
    if root is None:
        return AuthError(
            f"etcd at {endpoint} denied {what}: grant the user a role with readwrite "
            f"permission on the store's root prefix"
        )
    return AuthError(
        f"etcd at {endpoint} denied {what}: the user needs readwrite on the prefix {root}: "
        f"etcdctl role grant-permission ROLE --prefix=true readwrite {root} "
        f"(and etcdctl user grant-role USER ROLE)"
    )


def unknown_outcome(exc: grpc.aio.AioRpcError, endpoint: str, what: str) -> StoreUnavailableError:
    """The error for a write whose outcome is unknown (never retried silently)."""
    return StoreUnavailableError(
        f"etcd at {endpoint} failed during {what} ({exc.code().name}: {_details(exc)}): "
        f"the write may or may not have been applied; read the key before writing again"
    )

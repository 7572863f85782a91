"""The pure sorting and translation of etcd's gRPC failures into keel errors."""

from __future__ import annotations

import grpc
import pytest

from keel.backends.etcd._errors import Failure, classify, connect_failure, translate
from keel.errors import (
    AuthError,
    CompactedError,
    LeaseNotFoundError,
    StoreUnavailableError,
    ValidationError,
)


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; refused",
            Failure.UNSENT,
        ),
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader", Failure.UNSENT),
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", Failure.LOST),
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out", Failure.LOST),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", Failure.LOST),
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", Failure.TOKEN),
        (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found", Failure.ANSWER),
    ],
)
def test_failures_are_sorted_by_whether_a_resend_is_safe(
    code: grpc.StatusCode, details: str, kind: Failure
) -> None:
    """Only failures that certainly were not applied are UNSENT; mid-call losses are LOST."""
    assert classify(_rpc_error(code, details)) is kind


@pytest.mark.parametrize(
    ("code", "details", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found", LeaseNotFoundError),
        (
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
            CompactedError,
        ),
        (
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
            ValidationError,
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password",
            AuthError,
        ),
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", AuthError),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded",
            StoreUnavailableError,
        ),
    ],
)
def test_etcd_answers_become_keel_errors(
    code: grpc.StatusCode, details: str, error: type[Exception]
) -> None:
    """Each etcd error string maps to the keel error a caller can act on."""
    assert isinstance(translate(_rpc_error(code, details), "127.0.0.1:2379", "put 'k'"), error)


def test_certificate_problems_name_the_option_to_fix() -> None:
    """TLS failures name ca_file or cert_file/key_file; transient ones are left to retry."""
    untrusted = connect_failure("h:1", "... CERTIFICATE_VERIFY_FAILED ...", tls=True)
    refused = connect_failure("h:1", "Unwrap failed (TSI_DATA_CORRUPTED)", tls=True)
    assert isinstance(untrusted, AuthError) and "ca_file" in str(untrusted)
    assert isinstance(refused, AuthError) and "cert_file" in str(refused)
    assert connect_failure("h:1", "Connection refused", tls=True) is None


@pytest.mark.parametrize(
    ("details", "tls", "server_name", "names"),
    [
        (
            "Custom verification check failed with error: UNAUTHENTICATED: "
            "Hostname Verification Check failed.",
            True,
            None,
            ("certificate name mismatch", "the host h", "?server_name="),
        ),
        (
            "Peer name etcd.example is not in peer certificate",
            True,
            "etcd.example",
            ("certificate name mismatch", "server_name=etcd.example"),
        ),
        ("SSL routines:WRONG_VERSION_NUMBER", True, None, ("does not speak TLS", "drop ca_file")),
        ("SSL routines:WRONG_VERSION_NUMBER", False, None, ("speaks TLS", "?ca_file=")),
        (
            "SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED: certificate has expired: OK",
            True,
            None,
            ("does not trust (certificate has expired)", "ca_file"),
        ),
    ],
)
def test_tls_failures_name_their_cause_and_fix(
    details: str, tls: bool, server_name: str | None, names: tuple[str, ...]
) -> None:
    """Name mismatches, plain/TLS mix-ups and untrusted certificates each say what to fix."""
    error = connect_failure("h:1", details, tls=tls, server_name=server_name)
    assert isinstance(error, AuthError), error
    for name in names:
        assert name in str(error)


def test_a_permission_error_names_the_root_prefix_to_grant() -> None:
    """PERMISSION_DENIED names the store's root and the etcdctl command granting it."""
    exc = _rpc_error(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
    error = translate(exc, "h:1", "put 'k'", root="/staging/")
    assert isinstance(error, AuthError)
    assert "etcdctl role grant-permission ROLE --prefix=true readwrite /staging/" in str(error)

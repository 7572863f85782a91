"""Connection settings of the etcd backend, read from the store URL and checked once.

Bad settings (a missing certificate file, a key without a certificate, a CA
file that holds no certificate, a key that does not belong to its
certificate, a non-positive timeout) are refused here, before any socket
opens, with a message naming the option and the fix. gRPC itself would only
fail every handshake, which looks like an unreachable server.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from keel.errors import ValidationError
from keel.store import StoreURL

__all__ = ["DEFAULT_TIMEOUT_S", "EtcdSettings"]

DEFAULT_TIMEOUT_S = 5.0
_TRUE = frozenset({"1", "true", "yes", "on"})


def _check_certificates(option: str, path: str, pem: bytes, what: str) -> None:
    """Refuse a file that holds no PEM certificate (``what`` says which one is wanted)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=pem.decode("ascii", "replace")
        )
    except (ssl.SSLError, ValueError):
        raise ValidationError(
            f"{option}={path!r} is not a PEM certificate: give {what} "
            f"(a file that starts with -----BEGIN CERTIFICATE-----)"
        ) from None


def _check_key(cert_file: str, key_file: str) -> None:
    """Refuse a client key that is not a key, or not the certificate's key."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            cert_file, key_file, password=lambda: b""
        )
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ValidationError(
                f"key_file={key_file!r} does not match cert_file={cert_file!r}: give the "
                f"private key the client certificate was issued for"
            ) from None
        raise ValidationError(
            f"key_file={key_file!r} is not an unencrypted PEM private key: give the client "
            f"certificate's key (decrypt it first if it has a passphrase)"
        ) from None


def _read(option: str, path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError(
            f"{option}={path!r} cannot be read ({exc.strerror}): give the path of a PEM file"
        ) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdSettings:
    """How to reach an etcd cluster.

    Attributes:
        endpoints: ``host:port`` of each member, tried in this order.
        timeout_s: the bound on every call, failover included.
        user: the etcd user to authenticate as, if auth is enabled.
        password: that user's password.
        ca_file: PEM CA bundle that signed the servers' certificates (implies TLS).
        cert_file: PEM client certificate, for servers that require one.
        key_file: the client certificate's private key.
        server_name: the name to check the server certificate against.
        tls: use TLS even without ca_file (the system's trusted roots).
    """

    endpoints: tuple[str, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    tls: bool = False

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValidationError("no etcd endpoints: write etcd://host:port[,host:port...]")
        if not self.timeout_s > 0:
            raise ValidationError(
                f"timeout_s={self.timeout_s!r}: give a positive number of seconds"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValidationError(
                "cert_file and key_file go together: give both (client certificate and its key)"
            )
        if self.user is not None and self.password is None:
            raise ValidationError("an etcd user needs a password: write etcd://user:pass@host:port")

    @property
    def secure(self) -> bool:
        """Whether channels use TLS."""
        return self.tls or self.ca_file is not None or self.cert_file is not None

    @classmethod
    def from_url(cls, url: StoreURL, **options: Any) -> EtcdSettings:
        """Settings from a parsed ``etcd://`` URL; keyword options override URL options."""
        merged: dict[str, Any] = {**url.options, **options}
        timeout = merged.pop("timeout_s", DEFAULT_TIMEOUT_S)
        try:
            timeout_s = float(timeout)
        except (TypeError, ValueError):
            raise ValidationError(f"timeout_s={timeout!r}: give a number of seconds") from None
        tls = merged.pop("tls", False)
        unknown = set(merged) - {"ca_file", "cert_file", "key_file", "server_name"}
        if unknown:
            raise ValidationError(
                f"unknown etcd option(s) {', '.join(sorted(unknown))}: use ca_file, cert_file, "
                f"key_file, server_name, timeout_s, tls"
            )
        return cls(
            endpoints=tuple(f"{host}:{port}" for host, port in url.endpoints),
            timeout_s=timeout_s,
            user=url.user,
            password=url.password,
            tls=tls is True or str(tls).lower() in _TRUE,
            **merged,
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for the channels (files read and checked now), or None for plain text.

        Raises:
            ValidationError: a file cannot be read, holds no PEM certificate,
                or the key is not the client certificate's.
        """
        if not self.secure:
            return None
        ca, key = _read("ca_file", self.ca_file), _read("key_file", self.key_file)
        cert = _read("cert_file", self.cert_file)
        if ca is not None and self.ca_file is not None:
            _check_certificates(
                "ca_file", self.ca_file, ca, "the CA that signed etcd's certificate"
            )
        if cert is not None and self.cert_file is not None and self.key_file is not None:
            _check_certificates("cert_file", self.cert_file, cert, "the client certificate")
            _check_key(self.cert_file, self.key_file)
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """gRPC channel options: quick reconnects, keepalive pings, large messages."""
        options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", max(1000, int(self.timeout_s * 1000))),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # One connection per endpoint object: never share a subchannel with a
            # channel we are abandoning after a failover.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

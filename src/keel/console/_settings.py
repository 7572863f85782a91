"""How the console binds and guards itself (validated once, up front)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

from keel.errors import ValidationError

__all__ = ["DEFAULT_PORT", "ConsoleSettings", "is_loopback"]

DEFAULT_PORT = 8470


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleSettings:
    """Settings of one console process.

    Attributes:
        host: the address to bind; loopback unless TLS is on or ``allow_remote``.
        port: the port to bind (0: any free port).
        tls_cert: PEM certificate file; with ``tls_key`` the console serves HTTPS
            and its cookies are ``Secure``.
        tls_key: PEM private key file.
        allow_remote: allow a non-loopback bind without TLS (behind a TLS proxy);
            cookies are then ``Secure`` too, so browsers must reach it over HTTPS.
        session_ttl_s: how long a login lasts.
        login_per_user: failed logins per (name, address) in ``login_window_s``.
        login_per_address: failed logins per address in ``login_window_s``.
        login_window_s: the rate limit's sliding window.
        max_body_bytes: the largest request body accepted (forms, store writes).
        title: shown in the page header (the environment's name, say).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_remote: bool = False
    session_ttl_s: int = 8 * 3600
    login_per_user: int = 5
    login_per_address: int = 20
    login_window_s: float = 300.0
    max_body_bytes: int = 2 * 1024 * 1024
    title: str = "keel console"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"console port {self.port!r}: use 0 (any free port) to 65535")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValidationError("TLS needs both --tls-cert and --tls-key")
        if not self.tls and not self.allow_remote and not is_loopback(self.host):
            raise ValidationError(
                f"refusing to serve the console on {self.host} without TLS: "
                "pass --tls-cert/--tls-key, or --allow-remote behind a TLS proxy, "
                "or bind 127.0.0.1"
            )
        if self.session_ttl_s < 60:
            raise ValidationError(f"session_ttl_s {self.session_ttl_s!r}: use at least 60")
        if self.login_per_user < 1 or self.login_per_address < 1 or self.login_window_s <= 0:
            raise ValidationError("login limits must be positive")

    @property
    def tls(self) -> bool:
        """Whether the console itself serves HTTPS."""
        return bool(self.tls_cert and self.tls_key)

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry ``Secure``: TLS here, or a remote bind (TLS at a proxy)."""
        return self.tls or not is_loopback(self.host)

    def with_changes(self, **changes: Any) -> ConsoleSettings:
        """A copy with the given fields changed (None values ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

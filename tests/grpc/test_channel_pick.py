"""The channel's pure decisions: what is retried, the call's deadline, which instance qualifies."""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.balance import RoundRobin
from keel.errors import CircuitOpenError, NoInstanceError, ValidationError
from keel.grpc import ChannelSettings
from keel.grpc._pick import call_timeout, choose, is_unsent, should_retry, skip_reason, target_of
from keel.registry import Instance
from keel.resilience import BreakerSettings, CircuitBreaker

U = grpc.StatusCode.UNAVAILABLE
REFUSED = (
    "failed to connect to all addresses; last error: UNAVAILABLE: "
    "ipv4:127.0.0.1:1: Connection refused"
)


@pytest.mark.parametrize(
    ("code", "details", "idempotent", "expected"),
    [
        (U, REFUSED, False, True),
        (U, "Received RST_STREAM with error code 7 (REFUSED_STREAM)", False, True),
        (U, "Socket closed", False, False),
        (U, "Socket closed", True, True),
        (U, "fail_code=14", False, False),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", True, False),
        (grpc.StatusCode.INTERNAL, REFUSED, True, False),
        (grpc.StatusCode.NOT_FOUND, "", True, False),
    ],
)
def test_should_retry(
    code: grpc.StatusCode, details: str, idempotent: bool, expected: bool
) -> None:
    """Only UNAVAILABLE is retried: unsent always, sent only for idempotent methods."""
    assert should_retry(code, details, idempotent=idempotent) is expected


def test_is_unsent_needs_unavailable_and_details() -> None:
    """Another code or empty details never count as unsent."""
    assert not is_unsent(grpc.StatusCode.UNKNOWN, REFUSED)
    assert not is_unsent(U, None)
    assert is_unsent(U, REFUSED)


@settings(max_examples=30, deadline=None)
@given(
    caller=st.none() | st.floats(-1, 100, allow_nan=False),
    propagated=st.just(math.inf) | st.floats(0, 100, allow_nan=False),
    default=st.none() | st.floats(0.001, 100, allow_nan=False),
)
def test_call_timeout_is_the_earliest_limit(
    caller: float | None, propagated: float, default: float | None
) -> None:
    """The deadline is the minimum of the given limits, never negative."""
    limits = [x for x in (caller, propagated, default) if x is not None]
    assert call_timeout(caller, propagated, default) == max(0.0, min(limits))


def _inst(iid: str, scheme: str = "grpc", address: str = "127.0.0.1") -> Instance:
    return Instance(service="svc", address=address, port=5000, id=iid, scheme=scheme)


def test_skip_reason_and_target() -> None:
    """grpc qualifies; grpcs only with credentials; http never; IPv6 targets are bracketed."""
    assert skip_reason(_inst("a"), tls=False) is None
    assert skip_reason(_inst("a", "grpcs"), tls=True) is None
    assert "credentials" in (skip_reason(_inst("a", "grpcs"), tls=False) or "")
    assert "'http'" in (skip_reason(_inst("a", "http"), tls=True) or "")
    assert target_of(_inst("a", address="::1")) == "[::1]:5000"
    assert target_of(_inst("a")) == "127.0.0.1:5000"


@dataclass
class _Breakers:
    open_ids: set[str]

    def __call__(self, instance: Instance) -> CircuitBreaker:
        breaker = CircuitBreaker(BreakerSettings(minimum_calls=1, window_size=1))
        if instance.id in self.open_ids:
            breaker.allow().failed()
        return breaker


def test_choose_avoids_tried_and_open_instances() -> None:
    """A retry avoids tried instances while others remain; an open breaker is passed over."""
    a, b = _inst("a"), _inst("b")
    for _ in range(4):
        picked, _ = choose("svc", [a, b], {"a"}, RoundRobin(), _Breakers(set()))
        assert picked is b
    picked, _ = choose("svc", [a, b], {"a", "b"}, RoundRobin(), _Breakers(set()))
    assert picked in (a, b)
    for _ in range(4):
        picked, _ = choose("svc", [a, b], None, RoundRobin(), _Breakers({"a"}))
        assert picked is b
    with pytest.raises(CircuitOpenError, match="'svc'"):
        choose("svc", [a, b], None, RoundRobin(), _Breakers({"a", "b"}))
    with pytest.raises(NoInstanceError, match="'svc'"):
        choose("svc", [], None, RoundRobin(), _Breakers(set()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": math.inf}, "timeout_s"),
        ({"stream_timeout_s": -1.0}, "stream_timeout_s"),
        ({"close_grace_s": -1}, "close_grace_s"),
        ({"idempotent_methods": {"GetUser"}}, "/package.Service/Method"),
        ({"credentials": "tls"}, "ssl_channel_credentials"),
        ({"options": [("grpc.x",)]}, "pairs"),
        ({"retry": {"max_attempts": 2}}, "RetrySettings"),
        ({"breaker": None}, "BreakerSettings"),
        ({"idempotent_methods": "/a.B/C"}, "not one string"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(kwargs: dict[str, object], match: str) -> None:
    """Each bad setting is one ValidationError naming the setting and the fix."""
    with pytest.raises(ValidationError, match=match):
        ChannelSettings(**kwargs)  # type: ignore[arg-type]


def test_good_settings() -> None:
    """Defaults validate; user channel options come after keel's reconnect defaults."""
    s = ChannelSettings(
        idempotent_methods=["/pkg.Users/GetUser"],  # type: ignore[arg-type]
        options=[("grpc.max_receive_message_length", 1 << 20)],
        timeout_s=None,
    )
    assert s.idempotent_methods == frozenset({"/pkg.Users/GetUser"})
    assert s.channel_options()[-1] == ("grpc.max_receive_message_length", 1 << 20)
    assert ("grpc.max_reconnect_backoff_ms", 2000) in s.channel_options()

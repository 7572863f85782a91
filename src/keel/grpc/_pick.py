"""Pure decisions of the channel: which instances qualify, which one to pick, what to retry.

Nothing here does I/O or reads a clock of its own: the channel's call loop
(``_calls.py``) asks, then acts. The rules:

- An instance qualifies when its scheme is ``grpc`` (or ``grpcs`` and TLS
  credentials were given); anything else (an HTTP instance registered under
  the same name, a record from another tool) is skipped.
- A call's deadline is the earliest of the caller's ``timeout=``, keel's
  propagated deadline (:func:`keel.resilience.remaining`) and the channel's
  default.
- An attempt is retried on another instance only when it is safe: the request
  never left (UNAVAILABLE while connecting: gRPC's own "transparent retry"
  condition, gRFC A6), or the method is idempotent and the failure is
  UNAVAILABLE. DEADLINE_EXCEEDED is never retried: the deadline is the
  caller's whole budget.
- Outcomes that count against an instance (breaker, balancer, outlier
  ejection) are the codes that say the server is sick, as go-zero's gRPC
  breaker counts them; an application error (NOT_FOUND, INVALID_ARGUMENT...)
  is a healthy answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import grpc

from keel.balance import Balancer
from keel.errors import CircuitOpenError, NoInstanceError, ValidationError
from keel.registry import Instance
from keel.resilience import BreakerTicket, CircuitBreaker

__all__ = [
    "FAILURE_CODES",
    "call_timeout",
    "choose",
    "is_unsent",
    "override_instance",
    "should_retry",
    "skip_reason",
    "target_of",
]

FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
"""Codes that count as a failure of the instance (not of the request)."""

# What grpc-core writes in the details of an UNAVAILABLE whose request never
# reached a server: the connection could not be made, or the server refused
# the stream before reading it (GOAWAY / REFUSED_STREAM while it shut down).
_UNSENT = re.compile(
    r"failed to connect|connection refused|connect failed|failed to pick subchannel|"
    r"no connection|refused_stream|goaway|channel to .* is closing",
    re.IGNORECASE,
)

_SCHEMES = {"grpc": False, "grpcs": True}  # scheme -> needs TLS credentials


def is_unsent(code: grpc.StatusCode, details: str | None) -> bool:
    """Whether a failed attempt's request surely never reached a server."""
    if code is not grpc.StatusCode.UNAVAILABLE or not details:
        return False
    return _UNSENT.search(details) is not None


def should_retry(code: grpc.StatusCode, details: str | None, *, idempotent: bool) -> bool:
    """Whether a failed attempt may be repeated on another instance (ignoring budget and time).

    Args:
        code: the attempt's status code.
        details: its status details (grpc-core's text for transport failures).
        idempotent: the method may safely run twice.
    """
    if code is not grpc.StatusCode.UNAVAILABLE:
        return False
    return idempotent or is_unsent(code, details)


def call_timeout(caller_s: float | None, propagated_s: float, default_s: float | None) -> float:
    """The seconds a call may take: the earliest of the three limits (``inf``: none).

    Args:
        caller_s: the caller's ``timeout=`` (None: not given).
        propagated_s: what is left of keel's deadline context (``inf``: none).
        default_s: the channel's default (None: none).
    """
    left = propagated_s
    if caller_s is not None and caller_s < left:
        left = max(0.0, caller_s)
    if default_s is not None and default_s < left:
        left = default_s
    return left if not math.isnan(left) else 0.0


def skip_reason(instance: Instance, *, tls: bool) -> str | None:
    """Why ``instance`` cannot be called through a gRPC channel, or None if it can.

    Args:
        instance: a discovered instance.
        tls: whether the channel has TLS credentials (needed for ``grpcs``).
    """
    needs_tls = _SCHEMES.get(instance.scheme)
    if needs_tls is None:
        return f"its scheme is {instance.scheme!r}, not 'grpc' or 'grpcs'"
    if needs_tls and not tls:
        return "its scheme is 'grpcs' and the channel has no credentials= in its settings"
    return None


def target_of(instance: Instance) -> str:
    """The grpc target of an instance: ``address:port`` (IPv6 addresses bracketed)."""
    host = f"[{instance.address}]" if ":" in instance.address else instance.address
    return f"{host}:{instance.port}"


def override_instance(service: str, target: str) -> Instance:
    """The one instance a ``target_override`` (``host:port``, ``[v6]:port``) stands for.

    Raises:
        ValidationError: ``target`` is not ``host:port``.
    """
    host, sep, port = target.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit():
        raise ValidationError(
            f"target_override {target!r}: give 'host:port' (e.g. '127.0.0.1:50051')"
        )
    return Instance(service=service, address=host, port=int(port), scheme="grpc", id="override")


def choose(
    service: str,
    instances: Sequence[Instance],
    tried: set[str] | None,
    balancer: Balancer,
    breaker_of: Callable[[Instance], CircuitBreaker],
    key: str | None = None,
) -> tuple[Instance, BreakerTicket]:
    """Pick an instance for one attempt and admit it through the instance's breaker.

    Instances this call already tried are avoided while others remain; an
    instance whose breaker is open is passed over for the next pick.

    Args:
        service: the service name (for messages).
        instances: the usable instances.
        tried: ids of instances this call already tried.
        balancer: the service's balancer.
        breaker_of: the breaker of an instance.
        key: an affinity key for hashing balancers.

    Returns:
        the instance and its breaker ticket (report the outcome to it).

    Raises:
        NoInstanceError: no usable instance.
        CircuitOpenError: every candidate's breaker is open.
    """
    if not instances:
        raise NoInstanceError(f"service {service!r} has no gRPC instance up")
    candidates = instances
    if tried:
        candidates = [i for i in instances if i.id not in tried] or instances
    candidates = list(candidates)
    while candidates:
        instance = balancer.pick(candidates, key)
        try:
            return instance, breaker_of(instance).allow()
        except CircuitOpenError:
            candidates.remove(instance)
    raise CircuitOpenError(
        f"every instance of {service!r} has an open circuit breaker: the service is failing"
    )

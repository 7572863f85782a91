"""The scheduler's small records (planned mark, claim, dispatch) and the one way readers decode.

Every record under ``jobs/`` is untrusted: each type has one strict decoder
(the definition's is :meth:`JobDef.decode`, the run's :meth:`Execution.decode`,
the rest are here), and every reader goes through :func:`read`, which runs
the decoder inside :func:`keel._records.decode`, reports a rejected record
(``keel_records_rejected_total{area="schedule"}`` and a rate-limited
warning) and returns None, so the reader skips it and goes on. A record that
becomes valid again is simply read again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final, TypeVar

import msgspec

from keel._records import Rejected, decode, report
from keel.errors import ValidationError
from keel.schedule._checks import MAX_EPOCH_S
from keel.schedule._model import Execution, JobDef, def_key

__all__ = [
    "AREA",
    "ClaimRecord",
    "DispatchRecord",
    "PlannedMark",
    "decode_claim",
    "decode_dispatch",
    "decode_planned",
    "encode_claim",
    "encode_dispatch",
    "encode_planned",
    "job_decoder",
    "read",
    "run_decoder",
]

T = TypeVar("T")
AREA: Final = "schedule"
"""The ``area`` label of the scheduler's rejected records."""

_RunName = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{13,15}-[0-9]{3}(-[A-Za-z0-9]{1,40})?$")]
_Time = Annotated[float, msgspec.Meta(ge=0, le=MAX_EPOCH_S)]


class PlannedMark(msgspec.Struct, frozen=True):
    """``jobs/<job>/planned``: planning resumes after ``fire`` (epoch seconds)."""

    fire: _Time
    leader: str = ""


class ClaimRecord(msgspec.Struct, frozen=True):
    """``jobs/<job>/claims/...``: which run holds the claim, and which worker."""

    run: _RunName
    worker: str = ""


class DispatchRecord(msgspec.Struct, frozen=True):
    """``jobs/_dispatch/<term>-<n>``: the worker the planner assigned runs to, and how many."""

    worker: Annotated[str, msgspec.Meta(min_length=1, max_length=400)]
    runs: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


_ENCODER: Final = msgspec.json.Encoder()
_PLANNED: Final = msgspec.json.Decoder(PlannedMark)
_CLAIM: Final = msgspec.json.Decoder(ClaimRecord)
_DISPATCH: Final = msgspec.json.Decoder(DispatchRecord)


def _strict(decoder: msgspec.json.Decoder[T], what: str, value: bytes) -> T:
    try:
        return decoder.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValidationError(f"{what} is not valid: {exc}") from exc
    except RecursionError as exc:
        raise ValidationError(f"{what} is nested too deep") from exc


def decode_planned(value: bytes) -> PlannedMark:
    """Parse a planned mark. Raises: ValidationError."""
    return _strict(_PLANNED, "planned mark", value)


def decode_claim(value: bytes) -> ClaimRecord:
    """Parse a claim. Raises: ValidationError."""
    return _strict(_CLAIM, "claim", value)


def decode_dispatch(value: bytes) -> DispatchRecord:
    """Parse a dispatch. Raises: ValidationError."""
    return _strict(_DISPATCH, "dispatch", value)


def encode_planned(fire: float, leader: str) -> bytes:
    """A planned mark's value."""
    return _ENCODER.encode(PlannedMark(fire, leader))


def encode_claim(run: str, worker: str) -> bytes:
    """A claim's value."""
    return _ENCODER.encode(ClaimRecord(run, worker))


def encode_dispatch(worker: str, runs: int) -> bytes:
    """A dispatch's value."""
    return _ENCODER.encode(DispatchRecord(worker, runs))


def job_decoder(job: str) -> Callable[[bytes], JobDef]:
    """The decoder of ``jobs/<job>/def``: a valid definition whose name is ``job``."""

    def decode_def(value: bytes) -> JobDef:
        defn = JobDef.decode(value)
        if defn.name != job:
            raise ValidationError(f"definition names job {defn.name!r} under {def_key(job)!r}")
        return defn

    return decode_def


def run_decoder(key: str) -> Callable[[bytes], Execution]:
    """The decoder of the run record at ``key``: a valid execution whose key is ``key``."""

    def decode_run(value: bytes) -> Execution:
        rec = Execution.decode(value)
        if rec.key != key:
            raise ValidationError(f"record of run {rec.id!r} stored under another key")
        return rec

    return decode_run


def read(
    key: str,
    value: bytes,
    decoder: Callable[[bytes], T],
    on_reject: Callable[[Rejected], None] | None = None,
) -> T | None:
    """Decode a record from the store; None if rejected (reported, and given to ``on_reject``)."""
    result = decode(AREA, key, value, decoder)
    if isinstance(result, Rejected):
        report(result)
        if on_reject is not None:
            on_reject(result)
        return None
    return result

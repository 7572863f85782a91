"""The scheduler's record decoders and the floors on job definitions: refused clearly, no crash."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keel
from keel.errors import ValidationError
from keel.schedule import Execution, JobDef, Scheduler, parse_cron
from keel.schedule._codec import (
    decode_claim,
    decode_dispatch,
    decode_planned,
    job_decoder,
    run_decoder,
)
from keel.schedule._model import run_key, run_name

GOOD_RUN = Execution(job="a", name=run_name(1_000.0, 0), handler="a", fire=1_000.0)
DECODERS: dict[str, Callable[[bytes], object]] = {
    "def": job_decoder("a"),
    "run": run_decoder(run_key("a", GOOD_RUN.name)),
    "planned": decode_planned,
    "claim": decode_claim,
    "dispatch": decode_dispatch,
}
DEEP = b"[" * 5000 + b"]" * 5000
HOSTILE_VALUES = [
    b"",
    b"null",
    b"[]",
    b"[1,2]",
    b'"text"',
    b"\xff\xfe\x00",
    DEEP,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b"9" * 5000,
    b'{"fire":' + b"9" * 400 + b"}",
    b'{"fire":1e999}',
    b'{"fire":-1}',
    b'{"fire":true}',
    b'{"run":["x"]}',
    b'{"worker":"w","runs":true}',
    b'{"worker":"w","runs":-3}',
    b'{"worker":"","runs":1}',
]


def _def(**fields: object) -> bytes:
    return json.dumps({"name": "a", "trigger": {"interval_s": 5}, **fields}).encode()


def _run(**fields: object) -> bytes:
    record = json.loads(GOOD_RUN.encode())
    record.update(fields)
    return json.dumps(record).encode()


@pytest.mark.parametrize("kind", sorted(DECODERS))
@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=range(len(HOSTILE_VALUES)))
def test_hostile_values_raise_validation_error_only(kind: str, value: bytes) -> None:
    """Each record type's decoder refuses hostile bytes with ValidationError, nothing else."""
    with pytest.raises(ValidationError):
        DECODERS[kind](value)


@pytest.mark.parametrize(
    "value",
    [
        _def(trigger=[1]),
        _def(trigger={"interval_s": "5"}),
        _def(trigger={"interval_s": True}),
        _def(trigger={"interval_s": 1e-6}),
        _def(trigger={"interval_s": 0}),
        _def(trigger={"interval_s": 1e300}),
        _def(trigger={"interval_s": 5, "jitter_s": "1"}),
        _def(trigger={"interval_s": 5, "start": [2024]}),
        _def(trigger={"interval_s": 5, "start": "2024-01-01T00:00:00"}),
        _def(trigger={"cron": 5}),
        _def(trigger={"cron": "0 0 30 2 *"}),
        _def(trigger={"cron": "* * * * *", "tz": ["UTC"]}),
        _def(trigger={"cron": "* * * * *", "tz": "Mars/Olympus"}),
        _def(trigger={"cron": "* * * * *", "interval_s": 5}),
        _def(trigger={"interval_s": 5, "colour": "red"}),
        _def(trigger={"at": -1}),
        _def(trigger={"at": True}),
        _def(trigger={"at": "tomorrow"}),
        _def(trigger={"at": None}),
        _def(trigger={"at": {"y": 1}}),
        _def(name="b"),
        _def(name=["a"]),
        _def(group=7),
        _def(handler=["h"]),
        _def(shards=True),
        _def(shards=1.0),
        _def(shards=101),
        _def(shard_params="ab", shards=2),
        _def(shard_params=[1, 2], shards=2),
        _def(retries="3"),
        _def(retries=10**40),
        _def(backoff=[1]),
        _def(backoff={"base_delay_s": "1"}),
        _def(backoff={"max_delay_s": 1e300}),
        _def(timeout_s="5"),
        _def(timeout_s=0),
        _def(overlap=["allow"]),
        _def(misfire="later"),
        _def(misfire_limit=True),
        _def(paused="yes"),
        _def(keep_last=0),
        _def(max_age_s=-1),
        _def(args=json.loads("[" * 40 + "]" * 40)),
        _def(unknown=1),
    ],
)
def test_job_definition_decoder_is_strict(value: bytes) -> None:
    """A stored definition with any field of the wrong type or out of range is refused."""
    with pytest.raises(ValidationError):
        job_decoder("a")(value)


@pytest.mark.parametrize(
    "value",
    [
        _run(fire=-1),
        _run(fire=1e300),
        _run(fire="1000"),
        _run(shard=3),
        _run(shards=0),
        _run(shard=True),
        _run(attempt=-1),
        _run(retries=10**30),
        _run(token=2**70),
        _run(status="DONE"),
        _run(kind="other"),
        _run(tz="Nowhere/Else"),
        _run(tz=3),
        _run(backoff={"base_delay_s": "x"}),
        _run(backoff={"base_delay_s": 5, "max_delay_s": 1}),
        _run(backoff={"jitter": "lots"}),
        _run(backoff=[1]),
        _run(timeout_s=0),
        _run(dispatch="elsewhere"),
        _run(name="0000001000000-000/../x"),
        _run(job="b"),
        _run(args=json.loads("[" * 200 + "]" * 200)),
    ],
)
def test_run_decoder_is_strict(value: bytes) -> None:
    """A stored run with any field of the wrong type or out of range is refused."""
    with pytest.raises(ValidationError):
        run_decoder(GOOD_RUN.key)(value)


def test_valid_records_round_trip() -> None:
    """What keel writes, keel reads back."""
    assert run_decoder(GOOD_RUN.key)(GOOD_RUN.encode()) == GOOD_RUN
    defn = JobDef(name="a", trigger={"cron": "*/5 * * * *", "tz": "Europe/Berlin"}, shards=2)
    assert job_decoder("a")(defn.encode()) == defn
    assert decode_planned(b'{"fire": 12.5, "leader": "x"}').fire == 12.5


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(DECODERS)),
    value=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=20,
        ).map(lambda doc: json.dumps(doc).encode()),
    ),
)
def test_decoders_refuse_arbitrary_input_with_validation_error(kind: str, value: bytes) -> None:
    """Arbitrary bytes and JSON shapes: a record or ValidationError, never another exception."""
    with contextlib.suppress(ValidationError):
        DECODERS[kind](value)


# -- floors on definitions made in code ---------------------------------------------------


async def _job(**options: object) -> None:
    async with keel.connect("memory://") as store:
        Scheduler(store).job("j", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval_s": 1e-6}, "below the minimum of 0.1 s"),
        ({"interval_s": 0}, "interval_s 0 is below the minimum"),
        ({"interval_s": -1}, "interval_s -1"),
        ({"interval_s": float("nan")}, "interval_s nan"),
        ({"interval_s": True}, "interval_s True"),
        ({"interval_s": "5"}, "interval_s '5'"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "0 0 31 4,6,9,11 *"}, "never fires"),
        ({"at": -5}, "at -5: Unix epoch seconds must be from 0 (1970)"),
        ({"at": True}, "at bool True"),
        ({"at": [1]}, "at list"),
        ({"at": "2030-01-01T00:00:00"}, "is naive"),
        ({"at": datetime(2030, 1, 1)}, "is naive"),
        ({"at": "soon"}, "not an ISO 8601 datetime"),
        ({"interval_s": 5, "at": 10.0}, "give one of cron, interval_s, at"),
    ],
)
async def test_scheduler_job_refuses_bad_triggers(options: dict[str, object], message: str) -> None:
    """Scheduler.job refuses what the planner cannot honour with one ValidationError naming it."""
    with pytest.raises(ValidationError, match=re.escape(message)):
        await _job(**options)


@pytest.mark.parametrize(
    "trigger",
    [
        {"interval_s": 1e-6},
        {"interval_s": 0},
        {"cron": "0 0 30 2 *"},
        {"at": -1},
        {"at": False},
    ],
)
def test_jobdef_refuses_bad_triggers(trigger: dict[str, object]) -> None:
    """JobDef (what put_job stores) refuses the same triggers."""
    with pytest.raises(ValidationError):
        JobDef(name="j", trigger=trigger)


def test_at_accepts_aware_datetime_iso_string_and_epoch_seconds() -> None:
    """at= takes an aware datetime, an ISO string with a zone, or epoch seconds: all the same."""
    moment = datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
    forms = [moment, moment.isoformat(), moment.timestamp(), int(moment.timestamp())]
    for form in forms:
        defn = JobDef(name="j", trigger={"at": form})
        trigger = defn.make_trigger()
        assert trigger is not None
        assert trigger.next_after(moment - timedelta(seconds=1)) == moment
        assert job_decoder("j")(defn.encode()) == defn


def test_no_trigger_is_a_manual_job_and_the_minimum_interval_is_accepted() -> None:
    """No trigger at all asks for a manual-only job; 0.1 s is the smallest interval taken."""
    assert JobDef(name="j").make_trigger() is None
    assert JobDef(name="j", trigger={"interval_s": 0.1}).make_trigger() is not None


def test_cron_that_fires_rarely_is_accepted() -> None:
    """February 29th fires (in leap years); a restricted weekday always fires."""
    assert parse_cron("0 0 29 2 *").days == (29,)
    assert parse_cron("0 0 30 2 1").days == (30,)

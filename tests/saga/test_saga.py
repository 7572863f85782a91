"""keel.saga on every backend: happy path, compensation, groups, retries, keys, bad input."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.resilience import RetrySettings
from keel.saga import (
    Coordinator,
    Outcome,
    Parallel,
    Saga,
    SagaContext,
    Status,
    Step,
    StepState,
    abort_saga,
    current_context,
    get_saga,
    list_sagas,
    retry_saga,
)
from keel.store import Store
from tests.saga._helpers import Log

FAST = RetrySettings(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01)


async def test_happy_path_commits_and_records_results(store: Store) -> None:
    """Three steps run in order, each sees earlier results; the record says committed."""
    seen: list[dict[str, object]] = []

    async def reserve(ctx: SagaContext) -> dict[str, int]:
        return {"hold": ctx.input["qty"]}

    async def charge(ctx: SagaContext) -> str:
        seen.append(dict(ctx.results))
        assert current_context() == ctx
        assert ctx.headers() == {
            "keel-saga": ctx.saga_id,
            "keel-saga-step": "charge",
            "keel-saga-op": "action",
        }
        return "paid"

    log = Log()
    saga = Saga(
        "order",
        [
            Step("reserve", action=reserve),
            Step("charge", action=charge),
            Step("confirm", action=log.ok()),
        ],
    )
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        saga_id = await coord.start("order", {"qty": 2})
        assert await coord.wait(saga_id) is Outcome.COMMITTED
    rec = await get_saga(store, saga_id)
    assert rec.status is Status.COMMITTED
    assert rec.steps["reserve"].result == {"hold": 2}
    assert seen == [{"reserve": {"hold": 2}}]
    assert all(s.state is StepState.DONE for s in rec.steps.values())
    assert await store.get(f"saga-run/owner/{saga_id}") is None
    assert await store.get(f"saga-run/active/{saga_id}") is None


async def test_failure_compensates_started_steps_in_reverse(store: Store) -> None:
    """A step failing for good compensates itself and the steps before it, last first."""
    log = Log()
    saga = Saga(
        "order",
        [
            Step("a", action=log.ok(), compensate=log.ok()),
            Step("b", action=log.ok(), compensate=log.ok()),
            Step("c", action=log.fail(abort=True), compensate=log.ok()),
            Step("d", action=log.ok(), compensate=log.ok()),
        ],
    )
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        saga_id = await coord.start("order", {})
        assert await coord.wait(saga_id) is Outcome.COMPENSATED
    assert log.calls == [
        ("a", "action"),
        ("b", "action"),
        ("c", "action"),
        ("c", "compensate"),
        ("b", "compensate"),
        ("a", "compensate"),
    ]
    rec = await get_saga(store, saga_id)
    assert "card declined" in rec.error
    assert rec.steps["d"].state is StepState.PENDING
    assert rec.steps["c"].state is StepState.COMPENSATED


async def test_parallel_group_runs_together_and_compensates_together(store: Store) -> None:
    """The steps of a Parallel run at once; one failing compensates the group and before."""
    both = asyncio.Barrier(2)
    log = Log()

    async def meet(ctx: SagaContext) -> str:
        async with asyncio.timeout(5):
            await both.wait()  # only returns if the other step runs at the same time
        return ctx.step

    saga = Saga(
        "p",
        [
            Step("first", action=log.ok(), compensate=log.ok()),
            Parallel(Step("x", action=meet, compensate=log.ok()), Step("y", action=meet)),
            Step("last", action=log.ok()),
        ],
    )
    bad = Saga(
        "q",
        [
            Step("first", action=log.ok(), compensate=log.ok()),
            Parallel(
                Step("x", action=log.ok(), compensate=log.ok()),
                Step("y", action=log.fail(), compensate=log.ok()),
            ),
        ],
    )
    async with asyncio.timeout(20), Coordinator(store, [saga, bad], ttl_s=5) as coord:
        good_id = await coord.start("p")
        assert await coord.wait(good_id) is Outcome.COMMITTED
        log.calls.clear()
        bad_id = await coord.start("q")
        assert await coord.wait(bad_id) is Outcome.COMPENSATED
    assert (await get_saga(store, good_id)).steps["y"].result == "y"
    assert set(log.calls[3:5]) == {("x", "compensate"), ("y", "compensate")}
    assert log.calls[-1] == ("first", "compensate")


async def test_timeout_and_retry_per_step(store: Store) -> None:
    """A slow try times out and is retried; retries that succeed commit; attempts are kept."""
    tries = [0]

    async def slow_then_fast(ctx: SagaContext) -> int:
        tries[0] += 1
        if ctx.attempt == 1:
            await asyncio.sleep(10)
        return ctx.attempt

    log = Log()
    saga = Saga(
        "t",
        [
            Step("slow", action=slow_then_fast, timeout_s=0.1, retry=FAST),
            Step("flaky", action=log.fail(times=2), retry=FAST),
        ],
    )
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        saga_id = await coord.start("t")
        assert await coord.wait(saga_id) is Outcome.COMMITTED
    rec = await get_saga(store, saga_id)
    assert rec.steps["slow"].result == 2 and rec.steps["slow"].attempts == 2
    assert rec.steps["flaky"].attempts == 3


async def test_start_with_a_key_is_idempotent(store: Store) -> None:
    """The same key returns the same saga id and runs the saga once."""
    log = Log()
    saga = Saga("k", [Step("only", action=log.ok())])
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        ids = await asyncio.gather(*(coord.start("k", {"n": i}, key="order-123") for i in range(5)))
        assert len(set(ids)) == 1
        assert await coord.wait(ids[0]) is Outcome.COMMITTED
        assert await coord.start("k", {}, key="order-123") == ids[0]
        other = await coord.start("k", {}, key="order-124")
        assert other != ids[0]
        await coord.wait(other)
    assert log.calls == [("only", "action")] * 2


async def test_wait_outcomes_and_errors(store: Store) -> None:
    """wait returns each outcome; an unknown id is NotFoundError; a timeout raises."""
    gate = asyncio.Event()

    async def blocked(ctx: SagaContext) -> None:
        await gate.wait()

    log = Log()
    saga = Saga("w", [Step("s", action=blocked)])
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        saga_id = await coord.start("w")
        with pytest.raises(TimeoutError):
            await coord.wait(saga_id, timeout=0.2)
        gate.set()
        assert await coord.wait(saga_id) is Outcome.COMMITTED
        with pytest.raises(NotFoundError):
            await coord.wait("w/nope")
        with pytest.raises(ValidationError):
            await coord.wait("no-slash")
    assert log.calls == []


async def test_compensation_failing_for_good_is_failed_then_retried(store: Store) -> None:
    """A compensation past its retries leaves FAILED; the operator's retry compensates it."""
    broken = [True]

    async def refund(ctx: SagaContext) -> None:
        if broken[0]:
            raise RuntimeError("payments down")

    log = Log()
    saga = Saga(
        "f",
        [
            Step("charge", action=log.ok(), compensate=refund, compensate_retry=FAST),
            Step("ship", action=log.fail()),
        ],
    )
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        saga_id = await coord.start("f")
        assert await coord.wait(saga_id) is Outcome.FAILED
        rec = await get_saga(store, saga_id)
        assert "payments down" in rec.error and rec.steps["charge"].compensations == 3
        assert [r.id for r in await list_sagas(store, status=Status.FAILED)] == [rec.id]
        with pytest.raises(ConflictError):
            await abort_saga(store, saga_id)
        broken[0] = False
        await retry_saga(store, saga_id)
        assert await coord.wait(saga_id) is Outcome.COMPENSATED
        with pytest.raises(ConflictError):
            await retry_saga(store, saga_id)


async def test_operator_abort_compensates_a_running_saga(store: Store) -> None:
    """abort_saga makes a running saga compensate at its next transition."""
    started = asyncio.Event()
    gate = asyncio.Event()
    log = Log()

    async def wait_gate(ctx: SagaContext) -> None:
        started.set()
        await gate.wait()

    saga = Saga(
        "a",
        [
            Step("one", action=log.ok(), compensate=log.ok()),
            Step("two", action=wait_gate, compensate=log.ok()),
            Step("three", action=log.ok()),
        ],
    )
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        saga_id = await coord.start("a")
        await started.wait()
        assert (await abort_saga(store, saga_id)).abort
        gate.set()
        assert await coord.wait(saga_id) is Outcome.COMPENSATED
    assert ("three", "action") not in log.calls
    assert log.calls[-2:] == [("two", "compensate"), ("one", "compensate")]
    assert (await get_saga(store, saga_id)).error == "aborted by an operator"


async def test_bad_input_is_refused_and_nothing_is_written(store: Store) -> None:
    """Unknown name, non-JSON, oversized or deep input, bad key: ValidationError, no keys."""
    saga = Saga("b", [Step("s", action=Log().ok())])
    coord = Coordinator(store, [saga], max_input_bytes=1000)
    with pytest.raises(ValidationError, match="no saga named 'nope'"):
        await coord.start("nope", {})
    with pytest.raises(ValidationError, match="not JSON"):
        await coord.start("b", {"x": object()})
    with pytest.raises(ValidationError, match="over the limit of 1000"):
        await coord.start("b", "x" * 2000)
    deep: object = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ValidationError):
        await coord.start("b", deep)
    with pytest.raises(ValidationError, match="key"):
        await coord.start("b", {}, key="")
    kvs, _ = await store.range("")
    assert kvs == []
    with pytest.raises(ValidationError):
        Saga("x", [])
    with pytest.raises(ValidationError):
        Saga("x", [Step("s", action=Log().ok()), Step("s", action=Log().ok())])
    with pytest.raises(ValidationError):
        Step("bad name", action=Log().ok())


async def test_a_result_that_is_not_json_fails_the_step(store: Store) -> None:
    """An action returning something not JSON fails (no retry) and the saga compensates."""

    async def odd(ctx: SagaContext) -> object:
        return object()

    saga = Saga("r", [Step("s", action=odd, retry=FAST)])
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        saga_id = await coord.start("r")
        assert await coord.wait(saga_id) is Outcome.COMPENSATED
    rec = await get_saga(store, saga_id)
    assert "not JSON" in rec.error and rec.steps["s"].attempts == 1


async def test_started_elsewhere_is_taken_up_and_malformed_records_are_skipped(
    store: Store,
) -> None:
    """A saga started without a running coordinator runs once one starts; junk is skipped."""
    log = Log()
    saga = Saga("o", [Step("s", action=log.ok())])
    await store.put("sagas/o/junk", b'{"saga": 1}')
    await store.put("saga-run/active/o/junk", b"")
    await store.put("sagas/o/list", b"[1, 2]")
    idle = Coordinator(store, [saga])
    saga_id = await idle.start("o", {"n": 1})
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        assert await coord.wait(saga_id) is Outcome.COMMITTED
        rejected: list[object] = []
        listed = await list_sagas(store, on_reject=rejected.append)
        assert [f"o/{r.id}" for r in listed] == [saga_id]
        assert len(rejected) == 2
        await store.put("saga-run/active/o/junk2", b"")  # a marker with no record at all
        again = await coord.start("o")
        assert await coord.wait(again) is Outcome.COMMITTED
    assert log.calls == [("s", "action")] * 2
    assert msgspec.json.decode((await store.get(f"sagas/{saga_id}")).value)["status"] == "committed"  # type: ignore[union-attr]

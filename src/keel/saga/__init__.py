"""Orchestrated sagas: steps with compensations, run to the end or compensated, across crashes.

::

    order = Saga("order", [
        Step("reserve", action=reserve, compensate=release),
        Parallel(Step("charge", action=charge, compensate=refund),
                 Step("notify", action=notify)),
    ])
    async with Coordinator(store, sagas=[order]) as coordinator:
        saga_id = await coordinator.start("order", {"sku": "a1"}, key="order-123")
        outcome = await coordinator.wait(saga_id)     # COMMITTED, COMPENSATED or FAILED

Actions and compensations run at least once: participants make them
idempotent with :mod:`keel.saga.barrier`: ``async with barrier.guard(conn,
saga_id, step, op)`` applies a participant's write once per saga call
(duplicates, null compensation and hanging handled in the participant's own
transaction). See ``docs/saga.md``.
"""

from keel.saga import barrier
from keel.saga._admin import abort_saga, get_saga, list_sagas, retry_saga
from keel.saga._coordinator import DEFAULT_MAX_INPUT_BYTES, Coordinator
from keel.saga._definition import Abort, Action, Parallel, Saga, SagaContext, Step, current_context
from keel.saga._metrics import SagaMetrics, saga_metrics
from keel.saga._model import Outcome, SagaRecord, Status, StepRecord, StepState
from keel.saga._runner import MAX_RESULT_BYTES

__all__ = [
    "DEFAULT_MAX_INPUT_BYTES",
    "MAX_RESULT_BYTES",
    "Abort",
    "Action",
    "Coordinator",
    "Outcome",
    "Parallel",
    "Saga",
    "SagaContext",
    "SagaMetrics",
    "SagaRecord",
    "Status",
    "Step",
    "StepRecord",
    "StepState",
    "abort_saga",
    "barrier",
    "current_context",
    "get_saga",
    "list_sagas",
    "retry_saga",
    "saga_metrics",
]

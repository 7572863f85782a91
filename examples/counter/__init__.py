"""The counter service: ``/incr`` adds one to a Redis counter and answers the new value.

The classic first web service (the Go tutorial's "visit counter"), written as
a keel user would: a Starlette app, one Redis client opened in the lifespan,
run by :class:`keel.service.Service` with ``workers=2``::

    COUNTER_REDIS_URL=redis://127.0.0.1:6379 python -m examples.counter --workers 2

Concurrent requests share Redis round trips (:class:`Batcher`): requests that
arrive while the loop is busy send their INCRs as one pipeline, so one write
and one read carry many commands. Each command keeps its own reply and its
own error, so this is pipelining, not a transaction, and every successful
response is one increment (``bench/http_service.py`` checks the final value
against the responses counted). See docs/services.md, "The counter".
"""

from examples.counter._app import Batcher, make_app

__all__ = ["Batcher", "app", "make_app", "plain_app"]

app = make_app(batched=True)
"""``/incr`` with concurrent INCRs pipelined (``examples.counter:app``)."""

plain_app = make_app(batched=False)
"""``/incr`` with one redis-py call per request, for comparison."""

"""Idempotency keys for HTTP services: the ``Idempotency-Key`` ASGI middleware.

``app = keel.idempotency.Middleware(app, store=store)`` (or ``redis=...``): the
first request with a key runs and its response is stored; a retry with the same
key and the same request gets the stored response (``Idempotent-Replayed:
true``); a concurrent duplicate gets 409; the same key with another request
gets 422. See ``docs/idempotency.md``.
"""

from keel.idempotency._middleware import REPLAYED_HEADER, Middleware
from keel.idempotency._settings import IdempotencySettings

__all__ = ["REPLAYED_HEADER", "IdempotencySettings", "Middleware"]

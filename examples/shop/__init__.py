"""The shop example: ``orders`` calls ``inventory`` (2 instances) and ``payment`` by name
over HTTP, and ``users`` over gRPC.

Each HTTP service is a keel :class:`~keel.service.Service` (registered when
ready, ``/healthz`` ``/readyz`` ``/metrics``, drained on exit) and hot-reloads
one setting from the config center; ``users`` is a :class:`keel.grpc.Server`
(registered with scheme ``grpc``, health and reflection, drained on exit) that
``orders`` calls through a :class:`keel.grpc.Channel`. ``python -m
examples.shop`` runs all five instances; ``examples.shop.run_shop`` runs them
inside a caller's event loop (what ``keel up`` uses). See
``examples/shop/README.md``.
"""

from examples.shop._apps import inventory_app, orders_app, payment_app
from examples.shop._run import Shop, run_shop
from examples.shop._users import USERS, UserService

__all__ = [
    "USERS",
    "Shop",
    "UserService",
    "inventory_app",
    "orders_app",
    "payment_app",
    "run_shop",
]

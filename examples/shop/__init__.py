"""The shop example: ``orders`` calls ``users`` over gRPC, then runs the saga ``order``
(reserve stock on ``inventory``, 2 instances; charge on ``payment``; confirm) over HTTP.

Each HTTP service is a keel :class:`~keel.service.Service` (registered when
ready, ``/healthz`` ``/readyz`` ``/metrics``, drained on exit) and hot-reloads
its settings from the config center; ``users`` is a :class:`keel.grpc.Server`
(registered with scheme ``grpc``, health and reflection, drained on exit) that
``orders`` calls through a :class:`keel.grpc.Channel`. ``orders`` runs a
:class:`keel.saga.Coordinator`; ``inventory`` and ``payment`` keep their data
in SQLite files of their own and guard every saga call with
:mod:`keel.saga.barrier`. ``python -m examples.shop`` runs all five
instances; ``examples.shop.run_shop`` runs them inside a caller's event loop
(what ``keel up`` uses). See ``examples/shop/README.md``.
"""

from examples.shop._apps import inventory_app, orders_app, payment_app
from examples.shop._participants import Ledger
from examples.shop._run import Shop, run_shop
from examples.shop._saga import order_saga
from examples.shop._users import USERS, UserService

__all__ = [
    "USERS",
    "Ledger",
    "Shop",
    "UserService",
    "inventory_app",
    "order_saga",
    "orders_app",
    "payment_app",
    "run_shop",
]

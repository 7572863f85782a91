"""The shop's gRPC ``users`` service: ``UserService.GetUser`` over a small in-memory table."""

from __future__ import annotations

import grpc

from examples.shop.protos import users_pb2, users_pb2_grpc
from keel.grpc import ChannelSettings

__all__ = ["GET_USER", "USERS", "UserService", "users_channel_settings"]

GET_USER = "/shop.users.UserService/GetUser"
"""The full gRPC method name of ``GetUser`` (what ``idempotent_methods`` takes)."""

USERS: dict[str, users_pb2.User] = {
    user.id: user
    for user in (
        users_pb2.User(
            id="alice", name="Alice", email="alice@example.com", credit_limit_cents=50_000
        ),
        users_pb2.User(id="bob", name="Bob", email="bob@example.com", credit_limit_cents=1_000),
    )
}
"""The users the shop knows: alice may spend 500.00, bob 10.00 per order."""


class UserService(users_pb2_grpc.UserServiceServicer):
    """``shop.users.UserService``: looks a user up by id; ``NOT_FOUND`` for an unknown one."""

    async def GetUser(
        self, request: users_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        """The user ``request.id``, with its credit limit."""
        user = USERS.get(request.id)
        if user is None:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details(f"no user {request.id!r}: use one of {', '.join(sorted(USERS))}")
            return users_pb2.User()
        return user


def users_channel_settings() -> ChannelSettings:
    """How orders calls users: 2 s per call, ``GetUser`` retried on another instance (read-only)."""
    return ChannelSettings(timeout_s=2.0, idempotent_methods=frozenset({GET_USER}))

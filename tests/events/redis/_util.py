"""Helpers of the Redis Streams engine tests."""

from __future__ import annotations

import uuid


def prefix() -> str:
    """A key prefix no other test uses."""
    return f"t-{uuid.uuid4().hex[:10]}:"

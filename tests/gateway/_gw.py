"""A Gateway in the test's process (real server on a free port) and a document publisher."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from keel.config import ConfigCenter
from keel.gateway import Gateway
from keel.service import ServiceSettings
from keel.store import Store

FAST = ServiceSettings(drain_delay_s=0.05, grace_s=2.0)


async def publish(store: Store, document: dict[str, Any] | str, name: str = "gateway.yaml") -> int:
    """Publish a route document (a dict is written as YAML); returns its version."""
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    return (await ConfigCenter(store).publish(name, text)).version


@contextlib.asynccontextmanager
async def gateway(store: Store, **kwargs: Any) -> AsyncIterator[Gateway]:
    """A started gateway on a free port with its own metrics registry."""
    options: dict[str, Any] = {"port": 0, "registry": CollectorRegistry(), "settings": FAST}
    options.update(kwargs)
    async with Gateway(store, **options) as started:
        yield started

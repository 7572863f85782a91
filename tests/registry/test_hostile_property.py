"""Property: no bytes under services/ or health/ stop Discovery or the HealthChecker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

import hypothesis
import hypothesis.strategies as st
from hypothesis import given, settings

import keel
from keel.coord import Session
from keel.registry import Discovery, HealthCheck, HealthChecker, Instance, Registry

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ("weight", "zone", "version", "tags", "metadata", "status", "registered_at", "scheme")
INSTANCE_LIKE = st.fixed_dictionaries(
    {
        "address": st.sampled_from(["127.0.0.1", "::1", "", " ", "a/b", 7]) | JSON,
        "port": st.sampled_from([1, 0, 65536, True, "80", 2**64]) | JSON,
    },
    optional={
        **{name: JSON for name in FIELDS},
        "check": JSON
        | st.fixed_dictionaries({}, optional={n: JSON for n in ("type", "path", "interval_s")}),
    },
)
HAND_PICKED = [
    b"{}",
    b"[]",
    b"null",
    b'{"address":"1.2.3.4","port":81,"metadata":[1]}',
    b'{"address":"1.2.3.4","port":81,"metadata":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
    b"[" * 5000 + b"]" * 5000,
    b'{"address":"1.2.3.4","port":' + b"9" * 5000 + b"}",
    b'{"address":"1.2.3.4","port":81,"weight":1e999}',
    b'{"address":"\xff\xfe","port":81}',
    b'{"address":"127.0.0.1","port":1,"check":{"interval_s":1e-6,"timeout_s":1e-6}}',
    b'{"address":"127.0.0.1","port":1,"check":{"type":"http","path":"http://127.0.0.1:1/"}}',
    b'{"status":"failing"}',
    b'{"status":["failing"]}',
]
VALUES = st.one_of(
    st.binary(max_size=48),
    st.sampled_from(HAND_PICKED),
    JSON.map(lambda doc: json.dumps(doc).encode()),
    INSTANCE_LIKE.map(lambda doc: json.dumps(doc).encode()),
)
KEYS = st.tuples(
    st.sampled_from(["services/web/", "health/web/"]),
    st.text(alphabet="ab1.:_-@[]/ ", min_size=0, max_size=8),
).map("".join)
RECORDS = st.lists(st.tuples(KEYS, VALUES), min_size=3, max_size=12)
_canaries = itertools.count()


async def scenario(url: str, records: list[tuple[str, bytes]]) -> None:
    """Write ``records`` while both components run, then a valid change; both must keep going."""
    serial = next(_canaries)
    probed = asyncio.Event()

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        probed.set()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    check = HealthCheck(type="tcp", interval_s=1.0, timeout_s=0.5)
    canary = Instance(service="web", address="127.0.0.1", port=port, id=f"c{serial}", check=check)
    async with (
        server,
        keel.connect(url) as store,
        Discovery(store) as discovery,
        Session(store, ttl_s=5) as session,
        Registry(store, session=session) as registry,
    ):
        checker = asyncio.ensure_future(HealthChecker(session, node=f"hc{serial}").run())
        try:
            await discovery.instances("web")  # the cache is loaded and watching
            for key, value in records:
                await store.put(key, value)
            async with registry.register(canary), asyncio.timeout(20):
                async for _ in discovery.subscribe("web"):
                    if canary.id in {i.id for i in await discovery.all_instances("web")}:
                        break
                await probed.wait()  # the checker applied every record before the canary
                assert not checker.done()
                assert not any(task.done() for task in discovery._own)
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[
        hypothesis.HealthCheck.function_scoped_fixture,
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.data_too_large,
    ],
)
@given(records=RECORDS)
def test_no_record_stops_discovery_or_the_checker(
    store_url: str, records: list[tuple[str, bytes]]
) -> None:
    """Arbitrary bytes and JSON shapes are skipped; a later valid registration is applied."""
    asyncio.run(scenario(store_url, records))

"""Sagas survive kill -9 of their coordinators: every saga ends, every effect applied once."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

import keel
from keel.saga import Coordinator, Status, list_sagas
from tests._procs import Child, Children
from tests.conftest import make_url
from tests.saga._crash_participants import STEPS, init_db, make_saga

pytestmark = pytest.mark.slow

SAGAS = 200
DOOMED_EVERY = 20  # one saga in 20 has a compensation that fails for good
KILL_FOR_S = 12.0
SETTLE_S = 60.0


async def _spawn(children: Children, url: str, db: Path) -> Child:
    child = await children.start("tests.saga._crash_child", url, db)
    await child.expect("READY", timeout_s=30)
    return child


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_kill_9_coordinators_every_saga_ends_and_effects_apply_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, children: Children
) -> None:
    """200 sagas, random failures, two coordinators killed -9 and restarted at random."""
    url = make_url(backend, request, tmp_path)
    db = tmp_path / "participants.db"
    init_db(db)
    rng = random.Random(16)
    async with keel.connect(url) as store:
        procs = [await _spawn(children, url, db) for _ in range(2)]
        starter = Coordinator(store, [make_saga(db)])  # not running: sagas wait for a runner
        ids: list[str] = []

        async def start_all() -> None:
            for i in range(SAGAS):  # spread over the kill window, so kills land mid-saga
                ids.append(await starter.start("crash", {"n": i, "doom": i % DOOMED_EVERY == 0}))
                await asyncio.sleep(KILL_FOR_S * 0.8 / SAGAS)

        starting = asyncio.create_task(start_all())
        kills = busy_kills = 0
        end_kills = time.monotonic() + KILL_FOR_S
        while time.monotonic() < end_kills:
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            active, _ = await store.range("saga-run/active/")
            busy_kills += bool(active)
            slot = rng.randrange(len(procs))
            procs[slot].kill9()
            await procs[slot].wait()
            kills += 1
            procs[slot] = await _spawn(children, url, db)
        await starting
        async with asyncio.timeout(SETTLE_S):
            while True:
                recs = await list_sagas(store)
                if len(recs) == SAGAS and all(
                    r.status not in (Status.RUNNING, Status.COMPENSATING) for r in recs
                ):
                    break
                await asyncio.sleep(0.3)
    assert kills >= 5 and busy_kills >= 3, (kills, busy_kills)
    by_id = {f"{r.saga}/{r.id}": r for r in recs}
    with sqlite3.connect(db) as conn:
        effects = Counter(conn.execute("SELECT saga_id, step, op FROM effects"))
    assert max(effects.values()) == 1, [k for k, n in effects.items() if n > 1]
    outcomes: Counter[Status] = Counter()
    for n, saga_id in enumerate(ids):
        rec = by_id[saga_id]
        outcomes[rec.status] += 1
        done = {s: effects[(saga_id, s, "action")] for s in STEPS}
        undone = {s: effects[(saga_id, s, "compensate")] for s in STEPS}
        if rec.status is Status.COMMITTED:
            assert done == dict.fromkeys(STEPS, 1) and sum(undone.values()) == 0, saga_id
        elif rec.status is Status.COMPENSATED:
            assert done == undone, (saga_id, done, undone)
        else:
            assert rec.status is Status.FAILED and n % DOOMED_EVERY == 0, (saga_id, rec.error)
            assert undone["b"] == 0 and undone["c"] == done["c"]
    assert outcomes[Status.COMMITTED] > 0 and outcomes[Status.COMPENSATED] > 0


async def test_sigterm_stops_a_coordinator_cleanly(tmp_path: Path, children: Children) -> None:
    """SIGTERM ends run() normally: the process says so and exits 0."""
    db = tmp_path / "participants.db"
    init_db(db)
    child = await _spawn(children, f"sqlite:///{tmp_path / 'keel.db'}", db)
    child.signal(signal.SIGTERM)
    await child.expect("STOPPED", timeout_s=30)
    assert await child.wait() == 0

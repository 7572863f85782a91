"""Every live part of the configs, jobs, coordination and sagas pages renders alone.

``console.js`` refreshes a part by fetching ``?fragment=<id>``: the block must
render without the page around it (its imports inside the block) and keep its id.
"""

from __future__ import annotations

from tests.console._pages_harness import client

import keel
from keel.config import ConfigCenter, GrayRule
from keel.console import Role
from keel.saga import SagaRecord, Status
from keel.schedule import JobDef, put_job, trigger_job


async def test_each_live_block_renders_alone() -> None:
    """Each page's data-live blocks answer ?fragment= with that element only."""
    async with keel.connect("memory://") as store:
        center = ConfigCenter(store)
        await center.publish("a.yaml", "x: 1\n")
        await center.publish("a.yaml", "x: 2\n")
        await center.publish_gray("a.yaml", "x: 3\n", GrayRule(ids=("c",)))
        await put_job(store, JobDef(name="j", trigger={"interval_s": 60}))
        (run_id,) = await trigger_job(store, "j")
        record = SagaRecord(
            saga="o", id="s1", status=Status.RUNNING, steps={}, created_at=1, updated_at=1
        )
        await store.put("sagas/o/s1", record.encode())
        pages = {
            "/configs": ["configs"],
            "/configs/a.yaml": ["current", "history", "diff", "gray", "clients"],
            "/jobs": ["jobs"],
            "/jobs/j": ["state", "chart", "runs"],
            "/jobs/" + run_id.replace("/", "/runs/", 1): ["record"],
            "/coord": ["lines"],
            "/sagas": ["sagas"],
            "/sagas/o/s1": ["record"],
        }
        async with client(store, "olga", Role.OPERATOR) as c:
            for path, blocks in pages.items():
                full = await c.get(path)
                assert full.status_code == 200, path
                for block in blocks:
                    part = await c.get(path, params={"fragment": block})
                    assert part.status_code == 200, (path, block)
                    assert part.text.lstrip().startswith(f'<section id="{block}" data-live='), (
                        path,
                        block,
                    )
                    assert f'id="{block}" data-live=' in full.text

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


async def test_a_live_fragment_does_not_take_the_flash_meant_for_the_page() -> None:
    """A fragment fetched between an action and its redirect leaves the message to the page."""
    async with keel.connect("memory://") as store:
        await put_job(store, JobDef(name="j", trigger={"interval_s": 60}))
        async with client(store, "olga", Role.OPERATOR) as c:
            done = await c.post("/jobs/j/pause", follow_redirects=False)
            assert done.status_code in (302, 303), done.text
            part = await c.get("/jobs/j", params={"fragment": "state"})
            assert part.status_code == 200 and "paused j" not in part.text
            page = await c.get("/jobs/j")
            assert "paused j" in page.text

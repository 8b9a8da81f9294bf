"""The control requests other than status and cancel, by their wire names:
pause / resume, rerun, prune, workers and the schedule.* requests; and the
asyncio client's surface."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import AMQP_URL, Deployment, running, wait_for

import warren
import warren.aio


def test_pause_resume_and_rerun(deployment: Deployment) -> None:
    w = deployment.worker()
    runs: list[str] = []

    @w.task("py.once")
    def once(data: Any, ctx: warren.Context) -> dict[str, Any]:
        runs.append(ctx.task_id)
        if ctx.task_id == "b" and len(runs) < 3:
            raise warren.Fatal("b fails in the first run")
        return {"run": ctx.run}

    with running(w), deployment.client() as client:
        paused = client.pause(queue="python")
        assert "python" in paused.queues
        wf = warren.Workflow("rerun-me")
        a = wf.task("a", type="py.once", queue="python")
        wf.task("b", type="py.once", queue="python", depends_on=[a])
        wid = client.submit(wf)
        # Paused: its first task waits ready in the scheduler.
        wait_for("task a ready", lambda: client.status(wid).tasks["a"].state == "ready")
        assert runs == []
        assert client.resume(queue="python").queues == {}
        first = wait_for(
            "the first run's outcome", lambda: (r := client.status(wid)).status.is_final and r
        )
        assert first.status is warren.WorkflowStatus.FAILED, first
        second = client.rerun(wid, timeout=60)
        assert second.succeeded and second.run == 2, second
        assert second.tasks["b"].output == {"run": 2}
        assert runs == ["a", "b", "b"]
        with pytest.raises(warren.Rejected) as e:
            client.rerun(wid, timeout=30)
        assert [p.code for p in e.value.errors] == ["nothing_to_rerun"]
        assert client.prune(older_than_ms=3_600_000).pruned == 0
        with pytest.raises(ValueError):
            client.pause()


def test_schedules(deployment: Deployment) -> None:
    w = deployment.worker()

    @w.task("py.tick")
    def tick(data: Any) -> Any:
        return data

    wf = warren.Workflow("tick", input={"at": "${schedule.fire_time}"})
    wf.task("t", type="py.tick", queue="python", input={"at": wf.input["at"]})
    with running(w), deployment.client() as client:
        created = client.schedule.create("every-hour", workflow=wf, every_ms=3_600_000)
        assert created.outcome == "created"
        assert client.schedule.get("every-hour").outcome == "found"
        assert [s["id"] for s in client.schedule.list().schedules] == ["every-hour"]
        assert client.schedule.pause("every-hour").outcome == "paused"
        assert client.schedule.resume("every-hour").outcome == "resumed"
        fired = client.schedule.trigger("every-hour")
        assert fired.outcome == "triggered" and fired.workflow_id
        report = wait_for(
            "the firing's outcome",
            lambda: (r := client.status(fired.workflow_id or "")).status.is_final and r,
        )
        assert report.succeeded and report.tasks["t"].output["at"].endswith("Z"), report
        with pytest.raises(warren.Rejected) as e:
            client.schedule.create("bad", workflow=wf, cron="0 25 * * *", timezone="Mars/Base")
        assert {p.code for p in e.value.errors} >= {"invalid_cron", "unknown_timezone"}
        assert client.schedule.delete("every-hour").outcome == "deleted"
        assert client.schedule.get("every-hour").outcome == "not_found"


def test_the_asyncio_client(deployment: Deployment) -> None:
    w = deployment.worker(worker_id="py-aio")

    @w.task("py.double")
    async def double(n: int) -> int:
        return n * 2

    async def main() -> None:
        async with warren.aio.Client(url=AMQP_URL, namespace=deployment.namespace) as client:
            reports = await asyncio.gather(
                *[
                    client.submit_and_wait(
                        {
                            "tasks": [
                                {"id": "d", "type": "py.double", "queue": "python", "input": i}
                            ]
                        },
                        timeout=60,
                    )
                    for i in range(5)
                ]
            )
            assert sorted(r.tasks["d"].output for r in reports) == [0, 2, 4, 6, 8]
            wid = await client.submit(
                {"tasks": [{"id": "d", "type": "py.double", "queue": "python", "input": 21}]}
            )
            for _ in range(200):
                r = await client.status(wid)
                if r.status.is_final:
                    break
                await asyncio.sleep(0.05)
            assert r.tasks["d"].output == 42
            assert any(x.worker_id == "py-aio" for x in await client.workers())
            with pytest.raises(warren.Timeout):
                await client.submit_and_wait(
                    {"tasks": [{"id": "x", "type": "py.double", "queue": "nobody", "input": 1}]},
                    timeout=0.5,
                )

    deployment.queues.add("nobody")
    with running(w):
        asyncio.run(main())

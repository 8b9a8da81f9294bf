"""A cancel stops the running Python handlers of the workflow."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from support import Deployment, running, wait_for

import warren


def test_cancel_stops_running_python_handlers(deployment: Deployment) -> None:
    w = deployment.worker(concurrency=4)
    started = {"async": threading.Event(), "sync": threading.Event()}
    stopped = {"async": threading.Event(), "sync": threading.Event()}

    @w.task("py.wait_async")
    async def wait_async(data: Any) -> None:
        started["async"].set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            stopped["async"].set()
            raise

    @w.task("py.wait_sync")
    def wait_sync(data: Any, ctx: warren.Context) -> None:
        started["sync"].set()
        if ctx.wait_cancelled(120):
            stopped["sync"].set()

    @w.task("py.ok")
    def ok(data: Any) -> str:
        return "ok"

    wf = warren.Workflow("long")
    wf.task("a", type="py.wait_async", queue="python")
    wf.task("s", type="py.wait_sync", queue="python")
    with running(w), deployment.client() as client:
        wid = client.submit(wf)
        wait_for("both handlers to start", lambda: all(e.is_set() for e in started.values()))
        report = client.cancel(wid)
        assert report.status is warren.WorkflowStatus.CANCELLED, report
        # The notice reaches the worker, which stops both handlers.
        wait_for(
            "both handlers to be stopped",
            lambda: all(e.is_set() for e in stopped.values()),
            timeout=10,
        )
        assert client.status(wid).tasks["a"].state is warren.TaskState.CANCELLED
        # The worker still serves.
        done = client.submit_and_wait(
            {"tasks": [{"id": "k", "type": "py.ok", "queue": "python"}]}, timeout=30
        )
        assert done.tasks["k"].output == "ok"

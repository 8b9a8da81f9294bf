"""How a handler's outcome becomes the attempt's result: retries, failures,
unknown types, timeouts."""

from __future__ import annotations

from typing import Any

from support import Deployment, running

import warren


def test_retry_then_success(deployment: Deployment) -> None:
    w = deployment.worker()
    seen: list[int] = []

    @w.task("py.flaky")
    def flaky(data: Any, ctx: warren.Context) -> dict[str, Any]:
        seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise warren.Retry(f"not yet (attempt {ctx.attempt})")
        return {"attempt": ctx.attempt, "max": ctx.max_attempts}

    wf = warren.Workflow("flaky")
    wf.task(
        "f",
        type="py.flaky",
        queue="python",
        retry=warren.RetryPolicy(max_attempts=4, backoff_ms=10),
    )
    with running(w), deployment.client() as client:
        report = client.submit_and_wait(wf, timeout=60)
    assert report.succeeded, report
    assert report.tasks["f"].attempts == 3
    assert report.tasks["f"].output == {"attempt": 3, "max": 4}
    assert seen == [1, 2, 3]


def test_a_raising_handler_fails_without_retry_recording_message_and_type(
    deployment: Deployment,
) -> None:
    w = deployment.worker()
    calls: list[int] = []

    @w.task("py.broken")
    def broken(data: Any) -> None:
        calls.append(1)
        raise KeyError("customer_id")

    @w.task("py.fatal")
    async def fatal(data: Any) -> None:
        raise warren.Fatal("card declined")

    wf = warren.Workflow("broken", on_failure="fail")
    wf.task("b", type="py.broken", queue="python", retry=3)
    wf.task("f", type="py.fatal", queue="python", retry=3)
    wf.task("u", type="py.nobody", queue="python", retry=3)
    with running(w), deployment.client() as client:
        report = client.submit_and_wait(wf, timeout=60)
    assert report.status is warren.WorkflowStatus.FAILED, report
    b, f, u = report.tasks["b"], report.tasks["f"], report.tasks["u"]
    assert b.state is warren.TaskState.FAILED and b.attempts == 1, b
    assert b.error == warren.TaskError("KeyError: 'customer_id'", False), b.error
    assert calls == [1]
    assert f.error == warren.TaskError("card declined", False), f.error
    assert u.error is not None and not u.error.retryable
    assert "no handler for task type `py.nobody`" in u.error.message, u.error


def test_a_task_past_its_timeout_fails_retryable(deployment: Deployment) -> None:
    w = deployment.worker()

    @w.task("py.hang")
    def hang(data: Any, ctx: warren.Context) -> None:
        ctx.wait_cancelled(30)

    wf = warren.Workflow("hang")
    wf.task("h", type="py.hang", queue="python", timeout_ms=300)
    with running(w), deployment.client() as client:
        report = client.submit_and_wait(wf, timeout=60)
    h = report.tasks["h"]
    assert h.state is warren.TaskState.FAILED, report
    assert h.error == warren.TaskError("timed out after 300 ms", True), h.error


def test_results_coming_faster_than_their_confirms_travel_together(
    deployment: Deployment,
) -> None:
    w = deployment.worker(concurrency=64)

    @w.task("py.n")
    async def n(data: int) -> int:
        return data

    wf = warren.Workflow("many")
    for i in range(400):
        wf.task(f"t{i}", type="py.n", queue="python", input=i)
    with running(w), deployment.client() as client:
        report = client.submit_and_wait(wf, timeout=120)
    assert report.succeeded, report.error
    assert [report.tasks[f"t{i}"].output for i in range(400)] == list(range(400))
    assert w.counters["results"] == 400
    # Several results per message: the scheduler took warren.results bodies.
    assert w.counters["result_messages"] < 400, w.counters

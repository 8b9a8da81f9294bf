"""Submitting and waiting, with the Python worker serving."""

from __future__ import annotations

from typing import Any

import pytest
from support import Deployment, running

import warren


def test_submit_and_wait_with_a_python_worker(deployment: Deployment) -> None:
    w = deployment.worker(worker_id="py-thread")

    @w.task("py.upper")
    def upper(data: dict[str, Any]) -> dict[str, Any]:
        return {"text": data["text"].upper()}

    @w.task("py.count")
    async def count(data: dict[str, Any], ctx: warren.Context) -> dict[str, Any]:
        return {"n": len(data["text"]), "task": ctx.task_id, "attempt": ctx.attempt}

    wf = warren.Workflow("greet", input={"text": "hello"})
    a = wf.task("upper", type="py.upper", queue="python", input={"text": wf.input["text"]})
    wf.task(
        "count", type="py.count", queue="python", depends_on=[a], input={"text": a.output["text"]}
    )
    with running(w), deployment.client() as client:
        report = client.submit_and_wait(wf, timeout=60)
        assert report.status is warren.WorkflowStatus.SUCCEEDED, report
        assert report.tasks["upper"].output == {"text": "HELLO"}
        assert report.tasks["count"].output == {"n": 5, "task": "count", "attempt": 1}
        assert report.tasks["count"].state is warren.TaskState.SUCCEEDED
        assert report.tasks["count"].worker == "py-thread"
        # The same workflow asked about afterwards.
        status = client.status(report.workflow_id)
        assert status.status is warren.WorkflowStatus.SUCCEEDED
        assert client.status("no-such-workflow").status is warren.WorkflowStatus.NOT_FOUND


def test_a_rejected_workflow_raises_every_problem(deployment: Deployment) -> None:
    # Valid for the schema, refused by the scheduler: unknown dependency and
    # a cycle.
    wf = {
        "tasks": [
            {"id": "a", "type": "echo", "depends_on": ["b"]},
            {"id": "b", "type": "echo", "depends_on": ["a"]},
            {"id": "c", "type": "echo", "depends_on": ["nope"]},
        ]
    }
    with deployment.client() as client, pytest.raises(warren.Rejected) as e:
        client.submit_and_wait(wf, timeout=30)
    codes = {(p.code, p.task) for p in e.value.errors}
    assert ("unknown_dependency", "c") in codes, e.value.errors
    assert any(code == "cycle" for code, _ in codes), e.value.errors
    assert e.value.report is not None and e.value.report.status == "rejected"


def test_schema_validation_refuses_a_bad_workflow_before_sending(
    deployment: Deployment,
) -> None:
    wf = warren.Workflow("bad", priority=12)
    wf.task("a", type="echo", extra={"depnds_on": ["x"]})
    wf.task("b c", type="")
    with deployment.client() as client:
        with pytest.raises(warren.InvalidRequest) as e:
            client.submit(wf)
        # Nothing reached the broker: the requests queue stayed empty and
        # the scheduler never heard of it.
        messages = {str(p) for p in e.value.errors}
        assert any("priority" in m and "maximum" in m for m in messages), messages
        assert any("unknown field `depnds_on`" in m for m in messages), messages
        by_task = {p.task for p in e.value.errors}
        assert {"a", "b c", None} <= by_task, e.value.errors
        assert wf.id is None  # the builder was not changed
        # A workflow id never submitted: unknown to the scheduler.
        wf2 = {
            "id": "never-sent",
            "tasks": [{"id": "a", "type": "echo", "retry": {"max_attempts": 0}}],
        }
        with pytest.raises(warren.InvalidRequest):
            client.submit(wf2)
        assert client.status("never-sent").status is warren.WorkflowStatus.NOT_FOUND

"""A workflow served by Warren's Rust worker and the Python worker together,
data passing both ways through templates."""

from __future__ import annotations

from typing import Any

from support import Deployment, running

import warren


def test_rust_and_python_workers_pass_data_both_ways(deployment: Deployment) -> None:
    deployment.rust_worker("default", "rust-1")
    w = deployment.worker(worker_id="py-mixed")

    @w.task("py.upper")
    def upper(data: dict[str, Any]) -> dict[str, Any]:
        return {"text": data["text"].upper(), "n": 3}

    @w.task("py.join")
    def join(data: dict[str, Any]) -> dict[str, Any]:
        return {"joined": f"{data['from_rust']['text']}-{data['n']}"}

    wf = warren.Workflow("mixed", input={"text": "abc"})
    up = wf.task("up", type="py.upper", queue="python", input={"text": wf.input["text"]})
    # Warren's built-in `echo` answers its input: Python's output through Rust.
    echo = wf.task(
        "echo", type="echo", depends_on=[up], input={"text": up.output["text"], "n": up.output["n"]}
    )
    wf.task(
        "join",
        type="py.join",
        queue="python",
        depends_on=[echo],
        input={"from_rust": echo.output, "n": echo.output["n"]},
    )
    with running(w), deployment.client() as client:
        report = client.submit_and_wait(wf, timeout=60)
    assert report.succeeded, report
    assert report.tasks["echo"].output == {"text": "ABC", "n": 3}
    assert report.tasks["echo"].worker == "rust-1"
    assert report.tasks["join"].output == {"joined": "ABC-3"}
    assert report.tasks["join"].worker == "py-mixed"

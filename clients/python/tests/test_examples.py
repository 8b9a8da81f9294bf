"""examples/python on the SDK: the producer, the worker and the builder
together with Warren's Rust worker, as examples/mixed.json describes."""

from __future__ import annotations

import json
import subprocess
import sys

from support import REPO, Deployment, queue_state, wait_for


def test_the_sdk_examples_run_a_mixed_workflow(deployment: Deployment) -> None:
    deployment.rust_worker("default", "rust-1")
    deployment.queues.add("python")
    deployment.spawn(
        [sys.executable, str(REPO / "examples/python/sdk_worker.py")],
        "sdk-worker",
        {"WARREN_QUEUE": "python", "WARREN_WORKER_ID": "python-1"},
    )
    wait_for(
        "the example worker to consume",
        lambda: queue_state(f"{deployment.namespace}.tasks.python")[1] > 0,
    )
    env = {**deployment.env, "WARREN_TIMEOUT": "60"}
    out = subprocess.run(
        [sys.executable, "examples/python/producer.py", "examples/mixed.json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()
    report = json.loads(out.stdout)
    assert report["status"] == "succeeded"
    assert report["tasks"]["reverse"]["worker"] == "python-1"
    assert report["tasks"]["publish"]["output"] == {
        "original": "hello Warren",
        "reversed": "nerraW olleh",
    }
    out = subprocess.run(
        [sys.executable, "examples/python/builder.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == (
        "succeeded {'original': 'hello Warren', 'reversed': 'nerraW olleh'}\n"
    )

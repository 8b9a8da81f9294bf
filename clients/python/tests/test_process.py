"""The worker as a process (``python -m warren worker app:worker``): its
heartbeats, the drain on SIGTERM, and a poison task that kills it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from support import Deployment, binary, queue_state, wait_for

import warren


def _registered(client: warren.Client, worker_id: str, state: str) -> warren.WorkerInfo | None:
    for w in client.workers():
        if w.worker_id == worker_id and w.state == state:
            return w
    return None


def test_sigterm_drains_the_running_task_and_says_stopping(
    deployment: Deployment, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    proc = deployment.python_worker(worker_id="py-drain", APP_GRACE="30")
    with deployment.client() as client:
        info = wait_for(
            "the worker in the registry", lambda: _registered(client, "py-drain", "running")
        )
        assert info.queues == ["python"] and info.concurrency == 4
        assert info.version is not None and info.version.startswith("warren-client-python")
        # Listed by the CLI too.
        listed = subprocess.run(
            [binary("warren"), "workers"],
            env=deployment.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "py-drain" in listed.stdout, listed
        wid = client.submit(
            {
                "tasks": [
                    {
                        "id": "slow",
                        "type": "py.slow",
                        "queue": "python",
                        "input": {"marker": str(marker), "seconds": 1.5},
                    }
                ]
            }
        )
        wait_for("the handler to start", marker.exists)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, deployment.log("py-worker")
        # It finished the running task rather than abandoning it.
        report = wait_for("the outcome", lambda: (r := client.status(wid)).status.is_final and r)
        assert report.succeeded, report
        assert report.tasks["slow"].attempts == 1
        assert report.tasks["slow"].worker == "py-drain"
        assert _registered(client, "py-drain", "stopping"), client.workers()


def test_sigterm_gives_back_what_it_never_started(deployment: Deployment, tmp_path: Path) -> None:
    """Deliveries prefetched and not started return unmarked: the next worker
    runs them as ordinary tasks, not as suspects."""
    proc = deployment.python_worker(worker_id="py-giver", APP_CONCURRENCY="1")
    with deployment.client() as client:
        wait_for("the worker in the registry", lambda: _registered(client, "py-giver", "running"))
        wf = warren.Workflow("three")
        for i in range(3):
            wf.task(
                f"s{i}",
                type="py.slow",
                queue="python",
                input={"marker": str(tmp_path / f"m{i}"), "seconds": 1},
            )
        wid = client.submit(wf)
        wait_for("a handler to start", lambda: any(tmp_path.glob("m*")))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deployment.python_worker(worker_id="py-taker", APP_CONCURRENCY="3")
        report = wait_for(
            "the outcome", lambda: (r := client.status(wid)).status.is_final and r, timeout=60
        )
        assert report.succeeded, report
        assert all(t.attempts == 1 for t in report.tasks.values()), report
        assert queue_state(f"{deployment.namespace}.suspect.python")[0] == 0
        assert "redelivered" not in deployment.log("py-worker")


def test_a_poison_task_fails_after_the_delivery_limit(
    deployment: Deployment, tmp_path: Path
) -> None:
    marker = tmp_path / "crashes"
    procs: list[subprocess.Popen[bytes]] = []

    def restart() -> None:
        if not procs or procs[-1].poll() is not None:
            procs.append(
                deployment.python_worker(
                    worker_id=f"py-poison-{len(procs)}", APP_MAX_DELIVERIES="3"
                )
            )

    with deployment.client() as client:
        restart()
        wid = client.submit(
            {
                "tasks": [
                    {
                        "id": "p",
                        "type": "py.crash",
                        "queue": "python",
                        "input": {"marker": str(marker)},
                    },
                    {
                        "id": "after",
                        "type": "py.upper",
                        "queue": "python",
                        "depends_on": ["p"],
                        "input": {"text": "x"},
                    },
                ]
            }
        )

        def ended() -> warren.Report | None:
            restart()  # each crash kills the worker: start the next
            r = client.status(wid)
            return r if r.status.is_final else None

        report = wait_for("the poison task to fail", ended, timeout=120)
    p = report.tasks["p"]
    assert report.status is warren.WorkflowStatus.FAILED, report
    assert p.error is not None and not p.error.retryable
    assert p.error.message.startswith("delivered 4 times without finishing"), p.error
    assert report.tasks["after"].state is warren.TaskState.SKIPPED
    # It ran three times (the limit), each time killing its worker.
    assert marker.read_text() == "xxx"
    assert [q.returncode for q in procs[:3]] == [17, 17, 17]


def test_a_worker_started_before_any_scheduler_waits_for_one(tmp_path: Path) -> None:
    """The worker declares only its own queues; until a scheduler has
    declared the exchanges it retries, then serves."""
    d = Deployment(tmp_path, scheduler=False)
    try:
        d.python_worker(worker_id="py-early")
        wait_for("the worker to try and wait", lambda: "connecting again" in d.log("py-worker"))
        d.start_scheduler()
        with d.client() as client:
            report = client.submit_and_wait(
                {
                    "tasks": [
                        {
                            "id": "u",
                            "type": "py.upper",
                            "queue": "python",
                            "input": {"text": "late"},
                        }
                    ]
                },
                timeout=60,
            )
        assert report.tasks["u"].output == {"text": "LATE"}
        assert report.tasks["u"].worker == "py-early"
    finally:
        d.close()


def test_past_the_grace_period_a_task_is_abandoned_and_runs_again_as_a_suspect(
    deployment: Deployment, tmp_path: Path
) -> None:
    marker = tmp_path / "first"
    first = deployment.python_worker(worker_id="py-first", APP_GRACE="0.5")
    with deployment.client() as client:
        wait_for("the worker in the registry", lambda: _registered(client, "py-first", "running"))
        wid = client.submit(
            {
                "tasks": [
                    {
                        "id": "h",
                        "type": "py.slow_first",
                        "queue": "python",
                        "input": {"marker": str(marker)},
                    }
                ]
            }
        )
        wait_for("the handler to start", marker.exists)
        first.send_signal(signal.SIGTERM)
        # The hung handler's thread does not keep the process alive.
        assert first.wait(timeout=20) == 0
        assert "Grace period over; 1 unfinished tasks" in deployment.log("py-worker")
        deployment.python_worker(worker_id="py-second")
        report = wait_for(
            "the outcome", lambda: (r := client.status(wid)).status.is_final and r, timeout=60
        )
    assert report.succeeded, report
    assert report.tasks["h"].output == {"again": True}
    assert report.tasks["h"].worker == "py-second"
    assert "redelivered (delivery 2); it will run alone" in deployment.log("py-worker")

"""Task messages the worker cannot read never stop it: a body with readable
ids is failed by them, one without is dead-lettered (as Warren's worker)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import pytest
from support import AMQP_URL, Deployment, queue_state, running, wait_for

import warren


async def _publish_raw(namespace: str, bodies: list[bytes]) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    try:
        ch = await conn.channel(publisher_confirms=True)
        # The worker's own way into its queue (the scheduler binds the task
        # queue to {ns}.tasks only before its first task message).
        ex = await ch.get_exchange(f"{namespace}.requeue")
        for body in bodies:
            await ex.publish(aio_pika.Message(body), "tasks.python", mandatory=True)
    finally:
        await conn.close()


async def _read_dead(namespace: str) -> list[tuple[bytes, dict[str, Any]]]:
    conn = await aio_pika.connect(AMQP_URL)
    out = []
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(f"{namespace}.dead", passive=True)
        while (m := await q.get(no_ack=True, fail=False)) is not None:
            out.append((m.body, dict(m.headers or {})))
    finally:
        await conn.close()
    return out


def test_malformed_task_messages_are_answered_or_dead_lettered(deployment: Deployment) -> None:
    w = deployment.worker()

    @w.task("py.upper")
    def upper(data: Any) -> Any:
        return str(data).upper()

    @w.task("py.deep")
    def deep(data: Any) -> Any:
        out: Any = []
        for _ in range(100_000):
            out = [out]
        return out

    ns = deployment.namespace
    garbage = b"\xff not json"
    too_deep = b"[" * 100_000 + b"]" * 100_000
    no_type = json.dumps(
        {"workflow_id": "w-x", "task_id": "t", "attempt": 1, "token": "0" * 64}
    ).encode()
    with running(w), deployment.client() as client:
        asyncio.run(_publish_raw(ns, [garbage, no_type, b"[1, 2]", too_deep]))
        wait_for("the task queue to be empty", lambda: queue_state(f"{ns}.tasks.python") == (0, 1))
        dead: list[tuple[bytes, dict[str, Any]]] = []

        def both_dead() -> bool:
            dead.extend(asyncio.run(_read_dead(ns)))
            bodies = {b for b, _ in dead}
            return garbage in bodies and b"[1, 2]" in bodies and too_deep in bodies

        wait_for("both unreadable bodies dead-lettered", both_dead)

        # The one with readable ids was answered with a failed result; the
        # scheduler refuses it (its token is not the attempt's) and
        # dead-letters it, which shows what the worker published.
        def answered() -> Any:
            dead.extend(asyncio.run(_read_dead(ns)))
            for body, _ in dead:
                try:
                    r = json.loads(body)
                except (ValueError, RecursionError):
                    continue
                if isinstance(r, dict) and r.get("task_id") == "t":
                    return r
            return None

        result = wait_for("the failed result of the body without a type", answered)
        assert result["status"] == "failed" and result["workflow_id"] == "w-x", result
        assert result["error"] == {
            "message": "undecodable task message: missing field `type`",
            "retryable": False,
        }
        assert result["token"] == "0" * 64
        for body, headers in dead:
            if body == garbage:
                assert headers["warren-dead-queue"] == f"{ns}.tasks.python"
                assert "undecodable task message" in headers["warren-dead-reason"]
        # The worker serves on.
        report = client.submit_and_wait(
            {
                "tasks": [
                    {"id": "u", "type": "py.upper", "queue": "python", "input": "ok"},
                    {"id": "d", "type": "py.deep", "queue": "python"},
                ]
            },
            timeout=30,
        )
        assert report.tasks["u"].output == "OK"
        d = report.tasks["d"]
        assert d.error is not None and not d.error.retryable
        assert d.error.message.startswith("the output of task `d` is not JSON"), d.error


async def _publish_suspect(namespace: str, queue: str, body: bytes) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    try:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange(f"{namespace}.requeue")
        await ex.publish(
            aio_pika.Message(body, headers={"warren-deliveries": 2}),
            f"suspect.{queue}",
            mandatory=True,
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("queues", [["python"], ["python", "python2"]])
def test_suspects_are_run_from_every_pool(deployment: Deployment, queues: list[str]) -> None:
    """One queue: a consumer of its suspect queue; several: fetched in turn."""
    for q in queues:
        deployment.queues.add(q)
    w = warren.Worker(
        url=AMQP_URL, namespace=deployment.namespace, queues=queues, heartbeat_interval=0.5
    )
    seen: list[Any] = []

    @w.task("py.record")
    def record(data: Any) -> None:
        seen.append(data)

    ns = deployment.namespace
    with running(w):
        for i, q in enumerate(queues):
            body = json.dumps(
                {
                    "workflow_id": "w-s",
                    "task_id": f"t{i}",
                    "attempt": 1,
                    "type": "py.record",
                    "input": q,
                    "token": "0" * 64,
                }
            ).encode()
            asyncio.run(_publish_suspect(ns, q, body))
        wait_for("every suspect to run", lambda: sorted(seen) == sorted(queues))
        for q in queues:
            wait_for(
                f"suspect.{q} to be empty", lambda q=q: queue_state(f"{ns}.suspect.{q}")[0] == 0
            )

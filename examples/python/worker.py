#!/usr/bin/env python3
"""A Warren worker in Python with nothing but pika: the wire protocol by
hand, as any AMQP client in any language can do it. For real work use the
SDK (clients/python; examples/python/sdk_worker.py has these handlers).
Serves one task queue.

    WARREN_QUEUE=python python3 examples/python/worker.py

Handlers: `py.reverse` ({"text": s} -> {"text": reversed s}) and `py.upper`.
Environment: AMQP_ADDR, WARREN_NAMESPACE (as for the producer), WARREN_QUEUE
(default python), WARREN_WORKER_ID.

It follows docs/protocol.md: take a task message, run the handler, publish
the result (with the task message's `token`, without which it is not
applied) to {ns}.results and wait for the broker's confirm, then ack the
task. It needs only a worker's permissions (docs/security.md): it declares
its own queue and nothing else. A crash before the ack makes the broker redeliver the task (at least
once); the scheduler ignores a second result for the same attempt. It does
not count redeliveries (see "Poison tasks" in the protocol): a task that
crashes this worker every time is redelivered until an operator removes it.
Nor does it listen to {ns}.control: a task of a cancelled workflow runs to
its end here, and the scheduler ignores its result.
"""
import datetime
import json
import os
import signal
import sys

import pika

URL = os.environ.get("AMQP_ADDR", "amqp://127.0.0.1:5672/%2f")
NS = os.environ.get("WARREN_NAMESPACE", "warren")
QUEUE = os.environ.get("WARREN_QUEUE", "python")
WORKER_ID = os.environ.get("WARREN_WORKER_ID", f"python-{os.getpid()}")


class Fatal(Exception):
    """A failure that retrying cannot fix."""


def reverse(data):
    if not isinstance(data.get("text"), str):
        raise Fatal('py.reverse needs an input of the form {"text": "..."}')
    return {"text": data["text"][::-1]}


def upper(data):
    if not isinstance(data.get("text"), str):
        raise Fatal('py.upper needs an input of the form {"text": "..."}')
    return {"text": data["text"].upper()}


HANDLERS = {"py.reverse": reverse, "py.upper": upper}


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def properties(kind, message_id, headers=None):
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        type=kind,
        message_id=message_id,
        headers={"warren-protocol": 2, **(headers or {})},
    )


def run(task):
    """The result body for one task message."""
    started = now()
    result = {
        "workflow_id": task["workflow_id"],
        "task_id": task["task_id"],
        "attempt": task["attempt"],
        "token": task.get("token", ""),
        "worker": WORKER_ID,
        "started_at": started,
    }
    handler = HANDLERS.get(task["type"])
    try:
        if handler is None:
            raise Fatal(f"no handler for task type `{task['type']}` on {WORKER_ID}")
        result["output"] = handler(task.get("input"))
        result["status"] = "succeeded"
    except Fatal as e:
        result.update(status="failed", error={"message": str(e), "retryable": False})
    except Exception as e:  # an unexpected error may be transient
        result.update(status="failed", error={"message": repr(e), "retryable": True})
    result["finished_at"] = now()
    return result


def main():
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.confirm_delivery()
    # Its own queue, with the arguments Warren gives it (idempotent); the
    # exchanges and the queue's binding are the scheduler's.
    tasks = f"{NS}.tasks.{QUEUE}"
    ch.queue_declare(tasks, durable=True, arguments={"x-max-priority": 10})
    ch.basic_qos(prefetch_count=1)

    def on_task(ch, method, props, body):
        try:
            task = json.loads(body)
            ids = (task["workflow_id"], task["task_id"], task["attempt"])
        except (ValueError, KeyError, TypeError) as e:
            # Not a task message this worker can answer: keep it for people.
            ch.basic_publish(
                f"{NS}.dead", "", body,
                properties("warren.task", props.message_id or "", {
                    "warren-dead-reason": f"undecodable task message: {e}",
                    "warren-dead-queue": tasks,
                }),
                mandatory=True,
            )
            ch.basic_ack(method.delivery_tag)
            return
        result = run(task)
        # With several schedulers (PostgreSQL store) the task names the queue
        # of its workflow's partition, bound to {ns}.results by its name;
        # otherwise the key is empty (the shared results queue).
        reply_to = props.reply_to or ""
        partition = reply_to[len(f"{NS}.results."):]
        is_partition = reply_to.startswith(f"{NS}.results.") and partition.isdigit()
        key = reply_to if is_partition else ""
        # basic_publish returns once the broker has confirmed the result.
        ch.basic_publish(
            f"{NS}.results", key, json.dumps(result).encode(),
            properties("warren.result", "/".join(map(str, ids))),
            mandatory=True,
        )
        ch.basic_ack(method.delivery_tag)
        print(f"{ids[0]}/{ids[1]}/{ids[2]}: {result['status']}", file=sys.stderr, flush=True)

    ch.basic_consume(tasks, on_task, consumer_tag=f"{WORKER_ID}:{tasks}")
    signal.signal(signal.SIGTERM, lambda *_: ch.stop_consuming())
    print(f"{WORKER_ID} consuming {tasks}", file=sys.stderr, flush=True)
    try:
        ch.start_consuming()
    finally:
        # An unacked task (if stopped mid-way) returns to its queue.
        conn.close()


if __name__ == "__main__":
    main()

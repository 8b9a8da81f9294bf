#!/usr/bin/env python3
"""A Warren worker with the Python SDK (clients/python): the handlers of
examples/python/worker.py, without the protocol work.

    WARREN_QUEUE=python python3 examples/python/sdk_worker.py
    # or: cd examples/python && python3 -m warren worker sdk_worker:worker

Handlers: `py.reverse` ({"text": s} -> {"text": reversed s}) and `py.upper`.
Environment: AMQP_ADDR, WARREN_NAMESPACE, WARREN_QUEUE (default python),
WARREN_WORKER_ID, WARREN_CONCURRENCY (default 8).
"""

import os
from typing import Any

import warren

worker = warren.Worker(
    url=os.environ.get("AMQP_ADDR", "amqp://127.0.0.1:5672/%2f"),
    namespace=os.environ.get("WARREN_NAMESPACE", "warren"),
    queues=[os.environ.get("WARREN_QUEUE", "python")],
    concurrency=int(os.environ.get("WARREN_CONCURRENCY", "8")),
    worker_id=os.environ.get("WARREN_WORKER_ID"),
)


def text_of(data: Any, kind: str) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise warren.Fatal(f'{kind} needs an input of the form {{"text": "..."}}')
    return str(data["text"])


@worker.task("py.reverse")
def reverse(data: Any) -> dict[str, str]:
    return {"text": text_of(data, "py.reverse")[::-1]}


@worker.task("py.upper")
async def upper(data: Any) -> dict[str, str]:
    return {"text": text_of(data, "py.upper").upper()}


if __name__ == "__main__":
    worker.run()

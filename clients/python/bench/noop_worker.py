"""The Python worker of ``warren-bench python-worker``: a ``noop`` handler
(output = None) on queue ``default``, from the environment the bench gives
it (AMQP_ADDR, WARREN_NAMESPACE, BENCH_CONCURRENCY, BENCH_WORKER_ID).

    python3 clients/python/bench/noop_worker.py
"""

from __future__ import annotations

import os
from typing import Any

import warren

worker = warren.Worker(
    url=os.environ.get("AMQP_ADDR", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    namespace=os.environ.get("WARREN_NAMESPACE", "warren"),
    queues=["default"],
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "256")),
    worker_id=os.environ.get("BENCH_WORKER_ID", "bench-python"),
)


@worker.task("noop")
async def noop(data: Any) -> None:
    return None


if __name__ == "__main__":
    worker.run()

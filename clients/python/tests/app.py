"""The worker the process tests run with ``python -m warren worker app:worker``,
configured from the environment the test gives it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import warren

worker = warren.Worker(
    url=os.environ["AMQP_ADDR"],
    namespace=os.environ["WARREN_NAMESPACE"],
    queues=[os.environ.get("APP_QUEUE", "python")],
    concurrency=int(os.environ.get("APP_CONCURRENCY", "4")),
    worker_id=os.environ.get("APP_WORKER_ID"),
    max_deliveries=int(os.environ.get("APP_MAX_DELIVERIES", "5")),
    shutdown_grace=float(os.environ.get("APP_GRACE", "30")),
    heartbeat_interval=0.5,
)


@worker.task("py.upper")
def upper(data: dict[str, Any]) -> dict[str, Any]:
    return {"text": str(data["text"]).upper()}


@worker.task("py.slow")
def slow(data: dict[str, Any], ctx: warren.Context) -> dict[str, Any]:
    """Writes ``data["marker"]`` when it starts, then takes ``data["seconds"]``."""
    Path(data["marker"]).write_text(ctx.task_id)
    time.sleep(float(data["seconds"]))
    return {"slept": data["seconds"], "pid": os.getpid()}


@worker.task("py.crash")
def crash(data: dict[str, Any]) -> None:
    """Kills its process, as a segfault or the OOM killer would."""
    Path(data["marker"]).open("a").write("x")
    os._exit(17)


@worker.task("py.slow_first")
def slow_first(data: dict[str, Any]) -> dict[str, Any]:
    """The first run writes ``data["marker"]`` and hangs; later runs answer."""
    marker = Path(data["marker"])
    if marker.exists():
        return {"again": True}
    marker.write_text("started")
    time.sleep(600)
    return {"again": False}

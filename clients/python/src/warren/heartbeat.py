"""Heartbeats (docs/protocol.md, Worker heartbeats): the worker announces
itself on ``{ns}.events`` (key ``worker.{id}.heartbeat``) every interval,
and once more with ``state: stopping`` after a graceful drain, so that it
is listed by ``warren workers`` and sizes its queues' dispatch windows."""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import aio_pika
import aio_pika.abc

from .task_message import now
from .topology import properties

log = logging.getLogger("warren.worker")
VERSION = "warren-client-python 0.1.0"


@dataclass
class Beat:
    worker_id: str
    queues: list[str]
    concurrency: int
    interval_ms: int
    started_at: str
    in_flight: Callable[[], int]

    def body(self, state: str) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queues,
            "concurrency": self.concurrency,
            "in_flight": self.in_flight(),
            "version": VERSION,
            "interval_ms": self.interval_ms,
            "state": state,
            "started_at": self.started_at,
            "sent_at": now(),
        }


async def publish(exchange: aio_pika.abc.AbstractExchange, beat: Beat, state: str) -> None:
    """Publishes one heartbeat, not mandatory; a lost one is replaced by
    the next."""
    message = aio_pika.Message(
        json.dumps(beat.body(state)).encode(), **properties("warren.heartbeat")
    )
    try:
        await exchange.publish(message, f"worker.{beat.worker_id}.heartbeat", mandatory=False)
    except Exception as e:  # a heartbeat never stops the worker
        log.debug("Heartbeat not sent: %s", e)

"""The broker names of one namespace (docs/protocol.md, Topology) and the
declarations a worker makes: its pools' task and suspect queues, bound to
``{ns}.requeue``, and nothing else (the exchanges are the scheduler's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aio_pika

PROTOCOL = 2
HEADER_PROTOCOL = "warren-protocol"
HEADER_DELIVERIES = "warren-deliveries"
HEADER_DEAD_REASON = "warren-dead-reason"
HEADER_DEAD_QUEUE = "warren-dead-queue"
CONTROL_ROUTING_KEY = "control"
TASK_QUEUE_MAX_PRIORITY = 10
QUORUM_DELIVERY_LIMIT = 20

_PARTITION = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Names:
    """Every name of namespace ``namespace`` (``queue_type`` ``classic`` or
    ``quorum``: what ``WARREN_QUEUE_TYPE`` says for the namespace)."""

    namespace: str = "warren"
    queue_type: str = "classic"

    def __post_init__(self) -> None:
        if self.queue_type not in ("classic", "quorum"):
            raise ValueError(f"queue_type must be classic or quorum, not {self.queue_type!r}")

    @property
    def workflows(self) -> str:
        return f"{self.namespace}.workflows"

    @property
    def results(self) -> str:
        return f"{self.namespace}.results"

    @property
    def requeue(self) -> str:
        return f"{self.namespace}.requeue"

    @property
    def events(self) -> str:
        return f"{self.namespace}.events"

    @property
    def control(self) -> str:
        return f"{self.namespace}.control"

    @property
    def dead(self) -> str:
        return f"{self.namespace}.dead"

    def task_queue(self, queue: str) -> str:
        return f"{self.namespace}.tasks.{queue}"

    def suspect_queue(self, queue: str) -> str:
        return f"{self.namespace}.suspect.{queue}"

    def result_route(self, reply_to: str | None) -> str:
        """The routing key on ``{ns}.results`` of a result whose task message
        named ``reply_to``: that partition queue when it is one of this
        namespace's, else the shared results queue (``""``)."""
        if reply_to is None:
            return ""
        prefix = f"{self.namespace}.results."
        rest = reply_to[len(prefix) :] if reply_to.startswith(prefix) else ""
        return reply_to if _PARTITION.fullmatch(rest) else ""

    def pool_queue_arguments(self) -> dict[str, Any]:
        """The arguments of a task or suspect queue: exactly the scheduler's."""
        if self.queue_type == "quorum":
            return {
                "x-queue-type": "quorum",
                "x-delivery-limit": QUORUM_DELIVERY_LIMIT,
                "x-dead-letter-exchange": self.dead,
            }
        return {"x-max-priority": TASK_QUEUE_MAX_PRIORITY}

    async def declare_pool(self, channel: aio_pika.abc.AbstractChannel, queue: str) -> None:
        """Declares pool ``queue``'s task and suspect queues and binds them to
        ``{ns}.requeue`` (keys ``tasks.{queue}``, ``suspect.{queue}``).
        Idempotent; fails (channel closed, 404) while no scheduler has
        declared ``{ns}.requeue``."""
        requeue = await channel.get_exchange(self.requeue, ensure=True)
        for name, key in (
            (self.task_queue(queue), f"tasks.{queue}"),
            (self.suspect_queue(queue), f"suspect.{queue}"),
        ):
            q = await channel.declare_queue(
                name, durable=True, arguments=self.pool_queue_arguments()
            )
            await q.bind(requeue, routing_key=key)


def properties(kind: str | None, **extra: Any) -> dict[str, Any]:
    """The common message properties (docs/protocol.md) as keyword
    arguments of :class:`aio_pika.Message`."""
    headers = dict(extra.pop("headers", None) or {})
    headers[HEADER_PROTOCOL] = PROTOCOL
    props: dict[str, Any] = {
        "content_type": "application/json",
        "delivery_mode": aio_pika.DeliveryMode.PERSISTENT,
        "headers": headers,
    }
    if kind is not None:
        props["type"] = kind
    props.update(extra)
    return props

"""What a worker publishes because of a delivery, and the ack that follows:
a result, a suspect moved aside, a dead letter, a task given back. Each is
published ``mandatory`` on a confirmed channel, and the delivery is acked
only once the broker has confirmed it; a message the broker refuses (a nack,
nowhere to route) requeues the delivery instead, never acks it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Union

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq
import aiormq.abc

from .settler import Settler
from .task_message import encode_result
from .topology import HEADER_DEAD_QUEUE, HEADER_DEAD_REASON, HEADER_DELIVERIES, Names

log = logging.getLogger("warren.worker")

TASKS = "tasks"
SUSPECT = "suspect"


@dataclass
class Received:
    """A delivery, the pool (``queue``) it belongs to and which of the
    pool's queues it came from (``source``: ``tasks`` or ``suspect``)."""

    message: aio_pika.abc.AbstractIncomingMessage
    queue: str
    source: str
    # The acks of a task queue's consumer are coalesced; a suspect's go
    # out on their own.
    settler: Optional[Settler] = None


class PublishLost(Exception):
    """The publishing channel is gone: the session must end."""


def copy_properties(
    m: aio_pika.abc.AbstractIncomingMessage, headers: Optional[dict[str, Any]] = None
) -> dict[str, Any]:
    """The properties of ``m`` as :class:`aio_pika.Message` keyword
    arguments (``user_id`` left out: the broker checks it against our own
    user), with ``headers`` instead of its own when given."""
    props: dict[str, Any] = {
        "headers": dict(m.headers or {}) if headers is None else headers,
        "content_type": m.content_type,
        "content_encoding": m.content_encoding,
        "delivery_mode": m.delivery_mode or aio_pika.DeliveryMode.PERSISTENT,
        "priority": m.priority,
        "correlation_id": m.correlation_id,
        "reply_to": m.reply_to,
        "message_id": m.message_id,
        "type": m.type,
        "app_id": m.app_id,
        "timestamp": m.timestamp,
    }
    return {k: v for k, v in props.items() if v is not None}


class Publisher:
    def __init__(
        self, channel: aio_pika.abc.AbstractChannel, names: Names, max_result_bytes: int
    ) -> None:
        self.channel = channel
        self.names = names
        self.max_result_bytes = max_result_bytes
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._underlay: Optional[aiormq.abc.AbstractChannel] = None

    async def _exchange(self, name: str) -> aio_pika.abc.AbstractExchange:
        ex = self._exchanges.get(name)
        if ex is None:
            ex = await self.channel.get_exchange(name, ensure=False)
            self._exchanges[name] = ex
        return ex

    async def publish_then_ack(
        self,
        r: Received,
        exchange: str,
        key: str,
        message: Union[aio_pika.Message, tuple[bytes, aiormq.spec.Basic.Properties]],
    ) -> bool:
        """Publishes (mandatory, confirmed), then acks ``r``. Refused by
        the broker: ``r`` is requeued. Channel gone: :class:`PublishLost`
        (``r`` stays unacked and returns with the session). ``message`` is
        an aio-pika message, or (body, properties) sent on the underlying
        channel: the results' path, without aio-pika's per-message cost."""
        try:
            if isinstance(message, tuple):
                if self._underlay is None:
                    self._underlay = await self.channel.get_underlay_channel()
                body, props = message
                await self._underlay.basic_publish(
                    body, exchange=exchange, routing_key=key, properties=props, mandatory=True
                )
            else:
                ex = await self._exchange(exchange)
                await ex.publish(message, key, mandatory=True)
        except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError) as e:
            log.error(
                "The broker refused a message to %s (key %r): %s; requeueing the task",
                exchange,
                key,
                e,
            )
            await self._settle(r, ack=False)
            return False
        except (
            aio_pika.exceptions.AMQPError,
            ConnectionError,
            RuntimeError,
        ) as e:
            if self.channel.is_closed:
                raise PublishLost(str(e)) from e
            log.error("Publishing to %s failed: %s; requeueing the task", exchange, e)
            await self._settle(r, ack=False)
            return False
        await self._settle(r, ack=True)
        return True

    async def _settle(self, r: Received, ack: bool) -> None:
        tag = r.message.delivery_tag
        try:
            if r.settler is not None and tag is not None:
                if ack:
                    # Returns once the ack is written: a suspect moved aside
                    # must not run before its original's ack is out.
                    await r.settler.ack(r.message.channel, tag)
                else:
                    await r.message.channel.basic_reject(tag, requeue=True)
                    r.settler.rejected(tag)
            elif ack:
                await r.message.ack()
            else:
                await r.message.reject(requeue=True)
        except Exception as e:  # the consuming channel is gone: it comes back
            log.warning("Could not settle a delivery (%s); it will be redelivered", e)

    async def ack(self, r: Received) -> None:
        await self._settle(r, ack=True)

    async def result(self, r: Received, result: dict[str, Any]) -> bool:
        """Publishes the result to ``{ns}.results`` (the partition queue the
        task named in ``reply_to``, else the shared queue), then acks."""
        body = encode_result(result, self.max_result_bytes)
        key = self.names.result_route(r.message.reply_to)
        props = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=2,
            message_type="warren.result",
            message_id=f"{result['workflow_id']}/{result['task_id']}/{result['attempt']}",
            headers={"warren-protocol": 2},
        )
        return await self.publish_then_ack(r, self.names.results, key, (body, props))

    async def suspect(self, r: Received, deliveries: int) -> bool:
        """Moves ``r`` to its pool's suspect queue with the delivery count
        ``deliveries``, then acks the redelivered copy."""
        headers = dict(r.message.headers or {})
        headers[HEADER_DELIVERIES] = deliveries
        message = aio_pika.Message(r.message.body, **copy_properties(r.message, headers))
        return await self.publish_then_ack(r, self.names.requeue, f"{SUSPECT}.{r.queue}", message)

    async def dead_letter(self, r: Received, reason: str) -> bool:
        """Sends a message nothing can be made of to ``{ns}.dead`` with why
        and where from, then acks it."""
        log.warning("Dead-lettering a task message from %s: %s", r.queue, reason)
        headers = dict(r.message.headers or {})
        headers[HEADER_DEAD_REASON] = reason
        headers[HEADER_DEAD_QUEUE] = self.names.task_queue(r.queue)
        message = aio_pika.Message(r.message.body, **copy_properties(r.message, headers))
        return await self.publish_then_ack(r, self.names.dead, "", message)

    async def give_back(self, r: Received) -> None:
        """Returns a delivery that was never started to its queue unmarked
        (published again as it came, then acked): a requeue would set
        ``redelivered``, which the next worker reads as a crash. One that
        came redelivered keeps its mark: left unacked, it returns with the
        session."""
        if r.message.redelivered:
            return
        message = aio_pika.Message(r.message.body, **copy_properties(r.message))
        await self.publish_then_ack(r, self.names.requeue, f"{r.source}.{r.queue}", message)

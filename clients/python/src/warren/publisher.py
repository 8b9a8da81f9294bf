"""What a worker publishes because of a delivery, and the ack that follows:
a result, a suspect moved aside, a dead letter, a task given back. Each is
published ``mandatory`` on a confirmed channel, and the delivery is acked
only once the broker has confirmed it; a message the broker refuses (a nack,
nowhere to route) requeues the delivery instead, never acks it.

The worker's hot path works on aiormq, the AMQP layer under aio-pika,
directly: :class:`Delivery` is a delivered message as aiormq gives it, and
publishes go out on the underlying channel, without aio-pika's per-message
objects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Optional

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq
import aiormq.abc
from aiormq import spec

from .batcher import DEFAULT_COUNT, DEFAULT_MAX_BYTES, Batcher
from .settler import Settler
from .task_message import encode_result
from .topology import HEADER_DEAD_QUEUE, HEADER_DEAD_REASON, HEADER_DELIVERIES, Names

log = logging.getLogger("warren.worker")

TASKS = "tasks"
SUSPECT = "suspect"


@dataclass
class Delivery:
    """One delivered message: body, tag, redelivered mark, properties, and
    the channel it came on (where it is acked)."""

    body: bytes
    tag: int
    redelivered: bool
    properties: spec.Basic.Properties
    channel: aiormq.abc.AbstractChannel

    @staticmethod
    def of(m: aiormq.abc.DeliveredMessage) -> Delivery:
        d = m.delivery
        assert isinstance(d, (spec.Basic.Deliver, spec.Basic.GetOk))
        return Delivery(
            m.body, d.delivery_tag or 0, bool(d.redelivered), m.header.properties, m.channel
        )

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})

    @property
    def reply_to(self) -> Optional[str]:
        return self.properties.reply_to


@dataclass
class Received:
    """A delivery, the pool (``queue``) it belongs to and which of the
    pool's queues it came from (``source``: ``tasks`` or ``suspect``)."""

    message: Delivery
    queue: str
    source: str
    # The acks of a task queue's consumer are coalesced; a suspect's go
    # out on their own.
    settler: Optional[Settler] = None


class PublishLost(Exception):
    """The publishing channel is gone: the session must end."""


def copy_properties(
    p: spec.Basic.Properties, headers: Optional[dict[str, Any]] = None
) -> spec.Basic.Properties:
    """A copy of ``p`` (``user_id`` left out: the broker checks it against
    our own user), with ``headers`` instead of its own when given."""
    return spec.Basic.Properties(
        content_type=p.content_type,
        content_encoding=p.content_encoding,
        headers=dict(p.headers or {}) if headers is None else headers,
        delivery_mode=p.delivery_mode or 2,
        priority=p.priority,
        correlation_id=p.correlation_id,
        reply_to=p.reply_to,
        expiration=p.expiration,
        message_id=p.message_id,
        timestamp=p.timestamp,
        message_type=p.message_type,
        app_id=p.app_id,
    )


class Publisher:
    def __init__(
        self,
        channel: aio_pika.abc.AbstractChannel,
        names: Names,
        max_result_bytes: int,
        result_batch: int = DEFAULT_COUNT,
        counters: Optional[dict[str, int]] = None,
    ) -> None:
        self.channel = channel
        self.names = names
        self.max_result_bytes = max_result_bytes
        self._underlay: Optional[aiormq.abc.AbstractChannel] = None
        # The whole message of results stays within the scheduler's bound,
        # which the worker's result bound mirrors.
        self.batcher = Batcher(
            lambda key, body, props: self._publish(names.results, key, body, props),
            count=result_batch,
            max_bytes=min(DEFAULT_MAX_BYTES, max_result_bytes),
            counters=counters,
        )

    async def _publish(
        self, exchange: str, key: str, body: bytes, props: spec.Basic.Properties
    ) -> None:
        """Publishes ``mandatory`` and waits for the broker's confirm;
        raises what the broker answered otherwise."""
        if self._underlay is None:
            self._underlay = await self.channel.get_underlay_channel()
        await self._underlay.basic_publish(
            body, exchange=exchange, routing_key=key, properties=props, mandatory=True
        )

    async def publish_then_ack(
        self, r: Received, exchange: str, key: str, body: bytes, props: spec.Basic.Properties
    ) -> bool:
        """Publishes (mandatory, confirmed), then acks ``r``."""
        return await self._then_ack(r, exchange, key, self._publish(exchange, key, body, props))

    async def _then_ack(
        self, r: Received, exchange: str, key: str, published: Awaitable[None]
    ) -> bool:
        """Waits for ``published``, then acks ``r``. Refused by the broker:
        ``r`` is requeued. Channel gone: :class:`PublishLost` (``r`` stays
        unacked and returns with the session)."""
        try:
            await published
        except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError) as e:
            log.error(
                "The broker refused a message to %s (key %r): %s; requeueing the task",
                exchange,
                key,
                e,
            )
            await self._settle(r, ack=False)
            return False
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as e:
            if self.channel.is_closed:
                raise PublishLost(str(e)) from e
            log.error("Publishing to %s failed: %s; requeueing the task", exchange, e)
            await self._settle(r, ack=False)
            return False
        await self._settle(r, ack=True)
        return True

    async def _settle(self, r: Received, ack: bool) -> None:
        m = r.message
        try:
            if ack and r.settler is not None:
                # Returns once the ack is written: a suspect moved aside
                # must not run before its original's ack is out.
                await r.settler.ack(m.channel, m.tag)
            elif ack:
                await m.channel.basic_ack(m.tag)
            else:
                await m.channel.basic_reject(m.tag, requeue=True)
                if r.settler is not None:
                    r.settler.rejected(m.tag)
        except Exception as e:  # the consuming channel is gone: it comes back
            log.warning("Could not settle a delivery (%s); it will be redelivered", e)

    async def ack(self, r: Received) -> None:
        await self._settle(r, ack=True)

    async def result(self, r: Received, result: dict[str, Any]) -> bool:
        """Publishes the result to ``{ns}.results`` (the partition queue the
        task named in ``reply_to``, else the shared queue), then acks."""
        body = encode_result(result, self.max_result_bytes)
        key = self.names.result_route(r.message.reply_to)
        message_id = f"{result['workflow_id']}/{result['task_id']}/{result['attempt']}"
        sent = self.batcher.send(key, body, message_id)
        return await self._then_ack(r, self.names.results, key, sent)

    async def suspect(self, r: Received, deliveries: int) -> bool:
        """Moves ``r`` to its pool's suspect queue with the delivery count
        ``deliveries``, then acks the redelivered copy."""
        headers = r.message.headers
        headers[HEADER_DELIVERIES] = deliveries
        props = copy_properties(r.message.properties, headers)
        return await self.publish_then_ack(
            r, self.names.requeue, f"{SUSPECT}.{r.queue}", r.message.body, props
        )

    async def dead_letter(self, r: Received, reason: str) -> bool:
        """Sends a message nothing can be made of to ``{ns}.dead`` with why
        and where from, then acks it."""
        log.warning("Dead-lettering a task message from %s: %s", r.queue, reason)
        headers = r.message.headers
        headers[HEADER_DEAD_REASON] = reason
        headers[HEADER_DEAD_QUEUE] = self.names.task_queue(r.queue)
        props = copy_properties(r.message.properties, headers)
        return await self.publish_then_ack(r, self.names.dead, "", r.message.body, props)

    async def give_back(self, r: Received) -> None:
        """Returns a delivery that was never started to its queue unmarked
        (published again as it came, then acked): a requeue would set
        ``redelivered``, which the next worker reads as a crash. One that
        came redelivered keeps its mark: left unacked, it returns with the
        session."""
        if r.message.redelivered:
            return
        props = copy_properties(r.message.properties)
        await self.publish_then_ack(
            r, self.names.requeue, f"{r.source}.{r.queue}", r.message.body, props
        )

"""Acks of one channel's deliveries, coalesced, as Warren's worker does
(worker/src/settle.rs).

Confirms come from the broker in bursts, so many tasks become ready to ack
in the same turn of the event loop. A channel's delivery tags are 1, 2, 3,
... in delivery order, and a ``multiple`` ack of tag ``t`` acks every
unsettled delivery up to ``t``; so each turn's acks that are contiguous
with the floor (every tag below it settled) go out as one ``basic.ack``
with ``multiple``, and the others one by one at once, never held back (a
slow task must not stall the acks of fast ones).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

import aiormq.abc

log = logging.getLogger("warren.worker")


class Ledger:
    """Which deliveries of a channel are settled."""

    def __init__(self) -> None:
        self.floor = 1  # every tag below it is settled
        self.above: set[int] = set()  # settled tags above the floor

    def settled(self, tag: int) -> None:
        """Records a delivery settled some other way (rejected)."""
        self.above.add(tag)
        self._advance()

    def plan(self, burst: set[int]) -> tuple[Optional[int], list[int]]:
        """The acks of ``burst`` (unsettled tags), recorded as settled: a
        tag to ack with ``multiple`` (or None) and tags to ack singly."""
        self.above |= burst
        self._advance()
        below = [t for t in burst if t < self.floor]
        single = sorted(t for t in burst if t >= self.floor)
        return (max(below) if below else None), single

    def _advance(self) -> None:
        while self.floor in self.above:
            self.above.discard(self.floor)
            self.floor += 1


class Settler:
    """The coalesced acks of one consuming channel (its deliveries tell it
    which: ``ack`` takes the channel of the message)."""

    def __init__(self) -> None:
        self.channel: Optional[aiormq.abc.AbstractChannel] = None
        self.ledger = Ledger()
        self._burst: dict[int, asyncio.Future[None]] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    def ack(self, channel: aiormq.abc.AbstractChannel, tag: int) -> asyncio.Future[None]:
        """Acks ``tag`` with this turn's others; the future is done once
        the ack covering it is written."""
        self.channel = channel
        loop = asyncio.get_running_loop()
        if not self._burst:
            loop.call_soon(self._flush)
        f: asyncio.Future[None] = loop.create_future()
        self._burst[tag] = f
        return f

    def rejected(self, tag: int) -> None:
        self.ledger.settled(tag)

    def _flush(self) -> None:
        burst, self._burst = self._burst, {}
        if not burst:
            return
        multiple, single = self.ledger.plan(set(burst))
        task = asyncio.ensure_future(self._send(multiple, single, list(burst.values())))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(
        self, multiple: Optional[int], single: list[int], waiters: list[asyncio.Future[None]]
    ) -> None:
        try:
            assert self.channel is not None
            if multiple is not None:
                await self.channel.basic_ack(multiple, multiple=True)
            for tag in single:
                await self.channel.basic_ack(tag)
        except Exception as e:  # the channel is gone: its deliveries come back
            log.warning("Acks not sent (%s); those tasks will be redelivered", e)
        finally:
            for f in waiters:
                if not f.done():
                    f.set_result(None)

    async def drain(self) -> None:
        """Sends what this turn holds and waits for every ack in flight."""
        self._flush()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)

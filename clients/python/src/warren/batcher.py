"""Results published in batches when they come faster than the broker
confirms them, as Warren's worker does (worker/src/results.rs;
docs/protocol.md, Task result, "Several results in one message").

Every result costs the broker the same work whatever its size, and costs
this worker a frame or three. The batching adds no wait of its own: a
result is published at once, alone (a plain ``warren.result``), while
fewer than :data:`MAX_IN_FLIGHT` messages of results await their confirm;
only when that many are in flight do new results queue, and the next
message takes every queued result with the same routing key, up to
``count`` results and ``max_bytes`` of body, as one ``warren.results``
message (a JSON array). Each task's call returns (or raises) with the
outcome of the message that carried its result, so the rule "ack only
after the result is confirmed" holds per task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Callable, Optional

from aiormq import spec

MAX_IN_FLIGHT = 2
# Warren's worker's defaults: WARREN_RESULT_BATCH and 256 KiB a message.
DEFAULT_COUNT = 100
DEFAULT_MAX_BYTES = 256 * 1024
MAX_RESULTS_PER_MESSAGE = 1000

Publish = Callable[[str, bytes, spec.Basic.Properties], Awaitable[None]]


def properties(kind: str, message_id: str) -> spec.Basic.Properties:
    return spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_type=kind,
        message_id=message_id,
        headers={"warren-protocol": 2},
    )


class _Pending:
    __slots__ = ("body", "done", "key", "message_id")

    def __init__(self, key: str, body: bytes, message_id: str, done: asyncio.Future[None]) -> None:
        self.key, self.body, self.message_id, self.done = key, body, message_id, done


class Batcher:
    """The results of one session: ``await send(key, body, message_id)``
    returns once the message carrying the result is confirmed, and raises
    what publishing it raised (a refusal, a lost channel)."""

    def __init__(
        self,
        publish: Publish,
        count: int = DEFAULT_COUNT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        counters: Optional[dict[str, int]] = None,
    ) -> None:
        self._publish = publish
        # "results" and "result_messages" published (confirmed or not).
        self.counters = counters if counters is not None else {}
        self.count = max(1, min(count, MAX_RESULTS_PER_MESSAGE))
        self.max_bytes = max_bytes
        self._in_flight = 0
        self._queued: deque[_Pending] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, key: str, body: bytes, message_id: str) -> None:
        if self._in_flight < MAX_IN_FLIGHT and not self._queued:
            self._count(1)
            self._in_flight += 1
            try:
                await self._publish(key, body, properties("warren.result", message_id))
            finally:
                self._in_flight -= 1
                self._next()
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append(_Pending(key, body, message_id, done))
        self._next()
        await done

    def _next(self) -> None:
        """Starts messages of queued results while room is left."""
        while self._queued and self._in_flight < MAX_IN_FLIGHT:
            batch = self._take()
            self._in_flight += 1
            task = asyncio.ensure_future(self._send_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Pending]:
        """The next message's results: the first queued, and those after it
        with its routing key, within the count and byte bounds."""
        first = self._queued.popleft()
        batch, size, rest = [first], len(first.body) + 2, deque[_Pending]()
        while self._queued:
            p = self._queued.popleft()
            if (
                p.key == first.key
                and len(batch) < self.count
                and size + len(p.body) + 1 <= self.max_bytes
            ):
                batch.append(p)
                size += len(p.body) + 1
            else:
                rest.append(p)
        self._queued = rest
        return batch

    def _count(self, results: int) -> None:
        self.counters["results"] = self.counters.get("results", 0) + results
        self.counters["result_messages"] = self.counters.get("result_messages", 0) + 1

    async def _send_batch(self, batch: list[_Pending]) -> None:
        self._count(len(batch))
        try:
            if len(batch) == 1:
                p = batch[0]
                await self._publish(p.key, p.body, properties("warren.result", p.message_id))
            else:
                body = b"[" + b",".join(p.body for p in batch) + b"]"
                await self._publish(
                    batch[0].key, body, properties("warren.results", batch[0].message_id)
                )
        except BaseException as e:
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            for p in batch:
                if not p.done.done():
                    p.done.set_result(None)
        finally:
            self._in_flight -= 1
            self._next()

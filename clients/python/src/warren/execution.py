"""Running one delivery to its end, as Warren's own worker does
(worker/src/execute.rs): a redelivered task is moved to the suspect queue
(or failed past the delivery limit) instead of running; a suspect waits
until it can run alone; an undecodable body is failed by its ids or
dead-lettered; a task of a cancelled workflow is acked unrun; otherwise the
handler runs (with the task's timeout, stopped by a cancel notice) and its
result is published, confirmed, then the task acked.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from .cancels import Cancels
from .context import Context
from .daemon_pool import DaemonPool
from .errors import Fatal, Retry
from .handlers import Handler
from .publisher import SUSPECT, TASKS, Publisher, Received
from .task_message import TaskMessage, Undecodable, now
from .topology import HEADER_DELIVERIES

log = logging.getLogger("warren.worker")

# The longest error message a result carries (the scheduler keeps 16 KiB).
MAX_ERROR_CHARS = 16 * 1024


class AloneGate:
    """Ordinary tasks run side by side (shared); a suspect runs alone
    (exclusive). A waiting suspect holds back new ordinary tasks, so it is
    not starved."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._alone = False
        self._waiting_alone = 0

    async def enter(self, alone: bool) -> None:
        if not alone and not self._alone and not self._waiting_alone:
            self._shared += 1  # the common case: no suspect about, no lock
            return
        async with self._cond:
            if alone:
                self._waiting_alone += 1
                try:
                    await self._cond.wait_for(lambda: self._shared == 0 and not self._alone)
                finally:
                    self._waiting_alone -= 1
                self._alone = True
            else:
                await self._cond.wait_for(lambda: not self._alone and not self._waiting_alone)
                self._shared += 1

    async def leave(self, alone: bool) -> None:
        if alone:
            self._alone = False
        else:
            self._shared -= 1
        if alone or self._waiting_alone:
            async with self._cond:
                self._cond.notify_all()


def deliveries(headers: Optional[dict[str, Any]]) -> int:
    """The delivery count of a redelivered task, this delivery included: one
    more than its ``warren-deliveries`` header says (absent: 1)."""
    seen = (headers or {}).get(HEADER_DELIVERIES)
    n = seen if isinstance(seen, int) and not isinstance(seen, bool) else 1
    return max(n, 1) + 1


@dataclass
class Executor:
    """What every delivery of one session shares."""

    publisher: Publisher
    cancels: Cancels
    handlers: dict[str, Handler]
    worker_id: str
    max_deliveries: int
    pool: DaemonPool
    slots: asyncio.Semaphore
    gate: AloneGate = field(default_factory=AloneGate)
    # Set when the session drains: deliveries not started are given back.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Tasks started and not yet answered (for heartbeats' in_flight).
    running: int = 0

    async def take_slot(self) -> bool:
        """Waits for a free slot; False (holding none) once the session
        drains."""
        if self.stopping.is_set():
            return False
        if not self.slots.locked():
            await self.slots.acquire()
            return True
        acquire = asyncio.ensure_future(self.slots.acquire())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not acquire.done():
                acquire.cancel()
        got = acquire.done() and not acquire.cancelled()
        if got and self.stopping.is_set():
            self.slots.release()
            return False
        return got

    async def execute(self, r: Received) -> None:
        """Handles ``r`` to its end (see the module)."""
        if r.message.redelivered:
            try:
                msg = TaskMessage.decode(r.message.body)
            except Undecodable:
                pass  # answered below like any undecodable body
            else:
                # Held shared while it is moved: a suspect (run alone) starts
                # only once this ack is on the wire, so a crash while it
                # runs cannot bring this copy back too.
                await self.gate.enter(False)
                try:
                    await self.suspect(r, msg)
                finally:
                    await self.gate.leave(False)
                return
        alone = r.source == SUSPECT
        if not alone and not await self.take_slot():
            await self.publisher.give_back(r)
            return
        release_slot = not alone
        try:
            await self.gate.enter(alone)
            try:
                self.running += 1
                release_slot = await self.run(r, alone) and release_slot
            finally:
                self.running -= 1
                await self.gate.leave(alone)
        finally:
            if release_slot:
                self.slots.release()

    async def suspect(self, r: Received, msg: TaskMessage) -> None:
        n = deliveries(r.message.headers)
        if n > self.max_deliveries:
            log.error(
                "Giving up on task %s/%s: delivered %d times", msg.workflow_id, msg.task_id, n
            )
            started = now()
            await self.publisher.result(
                r,
                msg.result(
                    self.worker_id,
                    started,
                    error=(
                        f"delivered {n} times without finishing: the task crashes, hangs or "
                        "outlives its worker",
                        False,
                    ),
                ),
            )
            return
        log.warning(
            "Task %s/%s redelivered (delivery %d); it will run alone",
            msg.workflow_id,
            msg.task_id,
            n,
        )
        await self.publisher.suspect(r, n)

    async def run(self, r: Received, alone: bool) -> bool:
        """Runs the task of ``r`` and answers it. Returns False when a plain
        function is still running in its thread (timed out or cancelled):
        its slot is then freed when it returns, not now."""
        started = now()
        try:
            msg = TaskMessage.decode(r.message.body)
        except Undecodable as e:
            reason = f"undecodable task message: {e}"
            ids = TaskMessage.readable_ids(r.message.body)
            if ids is None:
                await self.publisher.dead_letter(r, reason)
            else:
                log.warning(
                    "Failing undecodable task %s/%s: %s", ids.workflow_id, ids.task_id, reason
                )
                await self.publisher.result(
                    r, ids.result(self.worker_id, started, error=(reason, False))
                )
            return True
        handler = self.handlers.get(msg.type)
        if handler is None:
            kinds = ", ".join(sorted(self.handlers))
            await self.publisher.result(
                r,
                msg.result(
                    self.worker_id,
                    started,
                    error=(
                        f"no handler for task type `{msg.type}` on worker {self.worker_id} "
                        f"(it handles: {kinds})",
                        False,
                    ),
                ),
            )
            return True
        ctx = Context(
            msg.workflow_id,
            msg.task_id,
            msg.attempt,
            msg.max_attempts,
            msg.type,
            msg.run,
            msg.message_id,
            self.worker_id,
        )
        # Resolved with why the handler's wait ends: done, stopped, timeout.
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def stop() -> None:
            ctx._cancel()
            if not waiter.done():
                waiter.set_result("stopped")

        key = self.cancels.enter(msg.workflow_id, msg.run, stop)
        if key is None:
            log.info("Task %s/%s of a cancelled workflow dropped", msg.workflow_id, msg.task_id)
            await self.publisher.ack(r)
            return True
        try:
            return await self.call(r, msg, handler, ctx, waiter, started, alone)
        finally:
            self.cancels.leave(msg.workflow_id, msg.run, key)

    async def call(
        self,
        r: Received,
        msg: TaskMessage,
        handler: Handler,
        ctx: Context,
        waiter: asyncio.Future[str],
        started: str,
        alone: bool,
    ) -> bool:
        loop = asyncio.get_running_loop()
        args = handler.args(msg.input, ctx)
        work: asyncio.Future[Any]
        if handler.is_async:
            work = asyncio.ensure_future(handler.fn(*args))
        else:
            work = asyncio.wrap_future(self.pool.submit(handler.fn, *args), loop=loop)

        def end(why: str) -> None:
            if not waiter.done():
                waiter.set_result(why)

        work.add_done_callback(lambda _: end("done"))
        timer = None
        if msg.timeout_ms is not None:
            timer = loop.call_later(msg.timeout_ms / 1000, end, "timeout")
        try:
            why = await waiter
        except asyncio.CancelledError:
            # The session abandons its tasks: the handler stops too.
            ctx._cancel()
            work.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if why != "done":
            ctx._cancel()
            if handler.is_async:
                work.cancel()
            else:
                # A thread cannot be stopped: its slot is freed when it returns.
                if not alone:
                    work.add_done_callback(lambda _: self.slots.release())
                work.add_done_callback(_retrieve)
            if why == "stopped":
                log.info(
                    "Task %s/%s stopped: its workflow was cancelled", msg.workflow_id, msg.task_id
                )
                await self.publisher.ack(r)
            else:
                await self.publisher.result(
                    r,
                    msg.result(
                        self.worker_id,
                        started,
                        error=(f"timed out after {msg.timeout_ms} ms", True),
                    ),
                )
            return handler.is_async
        error: Optional[tuple[str, bool]] = None
        output: Any = None
        try:
            output = work.result()
        except Retry as e:
            error = (str(e) or "Retry", True)
        except Fatal as e:
            error = (str(e) or "Fatal", False)
        except asyncio.CancelledError:
            error = ("the handler was cancelled", True)
        except Exception as e:
            error = (f"{type(e).__name__}: {e}", False)
        if error is not None:
            log.info(
                "Task %s/%s attempt %d failed: %s",
                msg.workflow_id,
                msg.task_id,
                msg.attempt,
                error[0][:500],
            )
            if len(error[0]) > MAX_ERROR_CHARS:
                error = (error[0][:MAX_ERROR_CHARS] + f"… ({len(error[0])} characters)", error[1])
        await self.publisher.result(
            r, msg.result(self.worker_id, started, output=output, error=error)
        )
        return True


def _retrieve(f: asyncio.Future[Any]) -> None:
    """Reads a late thread's outcome, so that asyncio does not warn of an
    exception never retrieved."""
    if not f.cancelled() and f.exception() is not None:
        log.info("A handler that timed out or was cancelled ended with: %r", f.exception())


__all__ = ["TASKS", "AloneGate", "Executor", "deliveries"]

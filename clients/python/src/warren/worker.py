"""The worker: :class:`Worker` registers handlers by task type and serves
task queues, following docs/protocol.md as Warren's own worker does.

A session holds two connections (consuming, publishing: flow control on one
cannot stall acks on the other). On the publishing side: the declarations
of the pools' task and suspect queues, a confirmed channel for results,
suspects, dead letters and tasks given back, and heartbeats. On the
consuming side: an exclusive queue bound to ``{ns}.control`` (cancel
notices), a channel whose per-consumer prefetch (never a global one) feeds
the task queues' consumers, and the suspects: one queue, a consumer with a
prefetch of 1; several, fetched one at a time with ``basic.get``. A local
semaphore keeps what runs to ``concurrency``.

A session ends on a fault (a connection or channel closed): running tasks
are abandoned (their deliveries return, marked redelivered) and a new
session starts after a backoff. ``stop()`` (or SIGTERM / SIGINT under
:meth:`Worker.run`) drains: the consumers are cancelled, deliveries not yet
started are given back unmarked, running tasks have ``shutdown_grace``
seconds to finish, a last heartbeat says ``stopping``. A second signal
abandons what still runs at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import socket
from typing import Any, Callable, Optional, TypeVar

import aio_pika
import aio_pika.abc
import aiormq.abc
from aiormq import spec

from . import heartbeat
from .aio import DEFAULT_URL
from .batcher import MAX_RESULTS_PER_MESSAGE
from .cancels import Cancels
from .daemon_pool import DaemonPool
from .execution import Executor
from .handlers import Handler
from .publisher import SUSPECT, TASKS, Delivery, Publisher, PublishLost, Received
from .settler import Settler
from .task_message import now
from .topology import Names

log = logging.getLogger("warren.worker")

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MAX_RESULT_BYTES = 2 * 1024 * 1024
MIN_MAX_RESULT_BYTES = 1024
SUSPECT_POLL_SECONDS = 1.0
STABLE_SESSION_SECONDS = 1.0


def task_prefetch(concurrency: int, queues: int) -> int:
    """Each task queue consumer's prefetch: ``concurrency`` for one queue,
    ``ceil(2 * concurrency / n)`` (at most ``concurrency``) for ``n``, as
    Warren's worker (worker/src/slots.rs)."""
    n = max(queues, 1)
    return max(1, min(-(-2 * concurrency // n), max(concurrency, 1)))


class Worker:
    """``Worker(url=..., namespace=..., queues=["python"], concurrency=8)``.

    Keyword settings (defaults as Warren's worker): ``worker_id`` (shown in
    results and ``warren workers``; default ``{host}-{pid}``),
    ``max_deliveries`` (5: a task delivered more often without finishing
    fails), ``shutdown_grace`` (30 s), ``heartbeat_interval`` (5 s),
    ``max_result_bytes`` (2 MiB), ``queue_type`` (``classic`` or ``quorum``,
    as the namespace's ``WARREN_QUEUE_TYPE``), ``prefetch`` (per task
    queue consumer; default as Warren's worker: ``concurrency`` for one queue)
    and ``result_batch`` (100: most results in one message when they come
    faster than their confirms; 1 sends each alone).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        namespace: str = "warren",
        queues: Optional[list[str]] = None,
        concurrency: int = 8,
        *,
        worker_id: Optional[str] = None,
        max_deliveries: int = 5,
        shutdown_grace: float = 30.0,
        heartbeat_interval: float = 5.0,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        queue_type: str = "classic",
        prefetch: Optional[int] = None,
        result_batch: int = 100,
    ) -> None:
        self.url = url
        self.names = Names(namespace, queue_type)
        self.queues = list(queues) if queues is not None else ["default"]
        if not self.queues or concurrency < 1:
            raise ValueError("at least one queue and a concurrency above 0 are needed")
        if max_result_bytes < MIN_MAX_RESULT_BYTES:
            raise ValueError(
                f"max_result_bytes is {max_result_bytes}, below the least of "
                f"{MIN_MAX_RESULT_BYTES} bytes"
            )
        if max_deliveries < 1 or heartbeat_interval < 0.1 or shutdown_grace < 0:
            raise ValueError(
                "max_deliveries >= 1, heartbeat_interval >= 0.1 s and "
                "shutdown_grace >= 0 are needed"
            )
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.max_deliveries = max_deliveries
        self.shutdown_grace = shutdown_grace
        self.heartbeat_interval = heartbeat_interval
        self.max_result_bytes = max_result_bytes
        self.prefetch = prefetch or task_prefetch(concurrency, len(self.queues))
        if not 1 <= result_batch <= MAX_RESULTS_PER_MESSAGE:
            raise ValueError(f"result_batch must be 1 to {MAX_RESULTS_PER_MESSAGE}")
        self.result_batch = result_batch
        self.counters: dict[str, int] = {}
        """Since it was made, across sessions: ``results`` published and the
        ``result_messages`` that carried them."""
        self.handlers: dict[str, Handler] = {}
        # Kept across sessions: a cancel heard before a reconnect still holds.
        self._cancels = Cancels()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._abandon: Optional[asyncio.Event] = None

    # -- registration ------------------------------------------------------

    def task(self, type: str) -> Callable[[F], F]:
        """Decorator: ``@worker.task("images.resize")`` registers the function
        for tasks of that type and returns it unchanged."""

        def register(fn: F) -> F:
            self.register(type, fn)
            return fn

        return register

    def register(self, type: str, fn: Callable[..., Any]) -> None:
        if not type:
            raise ValueError("a task type cannot be empty")
        if type in self.handlers:
            raise ValueError(f"a handler for `{type}` is registered already")
        self.handlers[type] = Handler.of(fn)

    # -- running -----------------------------------------------------------

    def run(self) -> None:
        """Serves until SIGTERM or SIGINT, then drains (see the module) and
        returns. Configures logging (INFO to stderr) when nothing has."""
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        asyncio.run(self._run_with_signals())

    async def _run_with_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.serve()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self._stop is not None and self._stop.is_set():
            log.warning("Second %s: abandoning the tasks still running", signal.Signals(sig).name)
            if self._abandon is not None:
                self._abandon.set()
            return
        log.info("%s: draining (grace %.0f s)", signal.Signals(sig).name, self.shutdown_grace)
        if self._stop is not None:
            self._stop.set()

    def stop(self) -> None:
        """Asks a running :meth:`serve` to drain and return; callable from
        any thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)

    async def serve(self) -> None:
        """Serves on the running event loop until :meth:`stop`, then drains.
        Reconnects after a fault, with a backoff (0.1 s doubling to 5 s)."""
        if not self.handlers:
            raise ValueError('no handler registered: use @worker.task("type")')
        self._loop = asyncio.get_running_loop()
        self._stop, self._abandon = asyncio.Event(), asyncio.Event()
        pool = DaemonPool(self.concurrency, "warren-handler")
        backoff = 0.1
        try:
            while not self._stop.is_set():
                began = self._loop.time()
                try:
                    await Session(self, pool).run()
                    return
                except Exception as e:
                    if self._loop.time() - began >= STABLE_SESSION_SECONDS:
                        backoff = 0.1
                    log.warning("Session ended: %s; connecting again in %.1f s", e, backoff)
                try:
                    await asyncio.wait_for(self._stop.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, 5.0)
        finally:
            pool.shutdown()


class Session:
    """One broker session of a worker (see the module)."""

    def __init__(self, worker: Worker, pool: DaemonPool) -> None:
        self.w = worker
        self.pool = pool
        self.tasks: set[asyncio.Task[Any]] = set()
        self.fault: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.stopping = False
        self.executor: Optional[Executor] = None
        self.settler = Settler()

    def _on_close(self, what: str, _sender: object, exc: Optional[BaseException]) -> None:
        if not self.fault.done():
            self.fault.set_result(f"{what} closed: {exc}")

    async def _connect(self, role: str) -> aio_pika.abc.AbstractConnection:
        w = self.w
        conn = await aio_pika.connect(
            w.url,
            client_properties={
                "connection_name": f"warren-worker {w.names.namespace} {w.worker_id} ({role})"
            },
        )
        conn.close_callbacks.add(functools.partial(self._on_close, f"the {role} connection"))
        return conn

    async def run(self) -> None:
        consume = await self._connect("consume")
        try:
            publish = await self._connect("publish")
            try:
                await self._serve(consume, publish)
            finally:
                await publish.close()
        finally:
            await consume.close()

    async def _serve(
        self, consume: aio_pika.abc.AbstractConnection, publish: aio_pika.abc.AbstractConnection
    ) -> None:
        w = self.w
        names = w.names
        setup = await publish.channel()
        # Its own queues only: the exchanges and the task queues' bindings are
        # the scheduler's (docs/security.md).
        for q in w.queues:
            await names.declare_pool(setup, q)
        await setup.close()
        pub = await publish.channel(publisher_confirms=True, on_return_raises=True)
        pub.close_callbacks.add(functools.partial(self._on_close, "the publishing channel"))
        ex = self.executor = Executor(
            Publisher(pub, names, w.max_result_bytes, w.result_batch, w.counters),
            w._cancels,
            w.handlers,
            w.worker_id,
            w.max_deliveries,
            self.pool,
            asyncio.Semaphore(w.concurrency),
        )

        notices = await consume.channel()
        control = await notices.get_exchange(names.control, ensure=True)
        mine = await notices.declare_queue("", exclusive=True, auto_delete=True)
        await mine.bind(control)
        await mine.consume(self._on_notice, no_ack=True)

        tasks_ch = await consume.channel()
        tasks_ch.close_callbacks.add(functools.partial(self._on_close, "the task channel"))
        await tasks_ch.set_qos(prefetch_count=w.prefetch, global_=False)
        suspects_ch = await consume.channel()
        suspects_ch.close_callbacks.add(functools.partial(self._on_close, "the suspect channel"))
        # Consumed on aiormq's channels directly: no aio-pika object per
        # delivery (see `publisher`).
        tasks_raw = await tasks_ch.get_underlay_channel()
        suspects_raw = await suspects_ch.get_underlay_channel()
        consumers: list[tuple[aiormq.abc.AbstractChannel, str]] = []
        for q in w.queues:
            name = names.task_queue(q)
            ok = await tasks_raw.basic_consume(
                name,
                functools.partial(self._on_delivery, q, TASKS),
                consumer_tag=f"{w.worker_id}:{name}",
            )
            consumers.append((tasks_raw, ok.consumer_tag or ""))
        poller: Optional[asyncio.Task[None]] = None
        if len(w.queues) == 1:
            await suspects_ch.set_qos(prefetch_count=1, global_=False)
            name = names.suspect_queue(w.queues[0])
            ok = await suspects_raw.basic_consume(
                name,
                functools.partial(self._on_delivery, w.queues[0], SUSPECT),
                consumer_tag=f"{w.worker_id}:{name}",
            )
            consumers.append((suspects_raw, ok.consumer_tag or ""))
        else:
            poller = asyncio.ensure_future(self._poll_suspects(suspects_raw))
        log.info(
            "Worker %s consuming %s (concurrency %d, prefetch %d); handlers: %s",
            w.worker_id,
            ", ".join(names.task_queue(q) for q in w.queues),
            w.concurrency,
            w.prefetch,
            ", ".join(sorted(w.handlers)),
        )

        events = await pub.get_exchange(names.events, ensure=False)
        beat = heartbeat.Beat(
            w.worker_id,
            w.queues,
            w.concurrency,
            int(w.heartbeat_interval * 1000),
            now(),
            lambda: ex.running,
        )
        beats = asyncio.ensure_future(self._heartbeats(events, beat))
        assert w._stop is not None and w._abandon is not None
        stop_wait: asyncio.Future[Any] = asyncio.ensure_future(w._stop.wait())
        fault: asyncio.Future[Any] = self.fault
        try:
            await asyncio.wait({stop_wait, fault}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            beats.cancel()
            if poller is not None:
                poller.cancel()
        if self.fault.done():
            # Running tasks stop at once: their results could not be
            # published or acked; their deliveries return with the session.
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            raise ConnectionError(self.fault.result())
        await self._drain(consumers, events, beat)

    async def _drain(
        self,
        consumers: list[tuple[aiormq.abc.AbstractChannel, str]],
        events: aio_pika.abc.AbstractExchange,
        beat: heartbeat.Beat,
    ) -> None:
        w = self.w
        assert w._abandon is not None
        self.stopping = True
        assert self.executor is not None
        self.executor.stopping.set()
        for channel, tag in consumers:
            try:
                await channel.basic_cancel(tag)
            except Exception as e:
                log.debug("basic.cancel of %s: %s", tag, e)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + w.shutdown_grace
        running = {t for t in self.tasks if not t.done()}
        if running:
            log.info("Waiting up to %.0f s for %d tasks in flight", w.shutdown_grace, len(running))
        abandon: asyncio.Future[Any] = asyncio.ensure_future(w._abandon.wait())
        try:
            # Deliveries already on their way when the consumers were
            # cancelled join the set (they are given back): wait for them too.
            while running and not abandon.done() and loop.time() < deadline:
                everything: asyncio.Future[Any] = asyncio.ensure_future(asyncio.wait(running))
                await asyncio.wait(
                    {abandon, everything},
                    timeout=deadline - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                everything.cancel()
                running = {t for t in self.tasks if not t.done()}
        finally:
            abandon.cancel()
        left = [t for t in self.tasks if not t.done()]
        if left:
            log.warning("Grace period over; %d unfinished tasks return to their queue", len(left))
            for t in left:
                t.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        await self.settler.drain()
        await heartbeat.publish(events, beat, "stopping")
        log.info("Worker %s stopped", w.worker_id)

    async def _heartbeats(
        self, events: aio_pika.abc.AbstractExchange, beat: heartbeat.Beat
    ) -> None:
        while True:
            await heartbeat.publish(events, beat, "running")
            await asyncio.sleep(self.w.heartbeat_interval)

    async def _on_notice(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            notice = json.loads(message.body)
            if not isinstance(notice, dict) or notice.get("control") != "cancel":
                return  # unknown notices are ignored
            wf, run = notice.get("workflow_id"), notice.get("run", 1)
            if not isinstance(wf, str) or not isinstance(run, int) or isinstance(run, bool):
                return
        except (ValueError, RecursionError):
            log.warning("A control notice that is not JSON was ignored")
            return
        stopped = self.w._cancels.cancel(wf, run)
        if stopped:
            log.info("Workflow %s cancelled: stopping %d running tasks", wf, stopped)

    async def _on_delivery(
        self, queue: str, source: str, message: aiormq.abc.DeliveredMessage
    ) -> None:
        r = Received(Delivery.of(message), queue, source, self.settler if source == TASKS else None)
        await self._handle(r)

    async def _handle(self, r: Received) -> None:
        """Handles one delivery to its end (given back when draining); a
        failure that is not a handler's ends the session."""
        task = asyncio.current_task()
        assert task is not None and self.executor is not None
        self.tasks.add(task)
        try:
            if self.stopping:
                await self.executor.publisher.give_back(r)
                return
            await self.executor.execute(r)
        except PublishLost as e:
            if not self.fault.done():
                self.fault.set_result(f"publishing lost: {e}")
        except Exception as e:
            # Not a handler's error (those become results): a fault of this
            # session. Its unanswered deliveries return with a new one.
            log.exception("Delivery from %s not handled", r.queue)
            if not self.fault.done():
                self.fault.set_result(f"a delivery could not be handled: {e!r}")
        finally:
            self.tasks.discard(task)

    async def _poll_suspects(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Several queues: suspects fetched one at a time, each queue in
        turn, the next only once the last is answered."""
        assert self.executor is not None
        queues = [(q, self.w.names.suspect_queue(q)) for q in self.w.queues]
        first = 0
        while True:
            found = None
            for i in range(len(queues)):
                q, queue = queues[(first + i) % len(queues)]
                message = await channel.basic_get(queue, no_ack=False)
                if isinstance(message.delivery, spec.Basic.GetOk):
                    first = (first + i + 1) % len(queues)
                    found = Received(Delivery.of(message), q, SUSPECT)
                    break
            if found is None:
                await asyncio.sleep(SUSPECT_POLL_SECONDS)
                continue
            # Shielded: the drain waits for it rather than this poller.
            await asyncio.shield(asyncio.ensure_future(self._handle(found)))

"""The asyncio client: ``warren.aio.Client``, the same surface as
:class:`warren.Client` with ``async`` methods.

One connection, opened at the first call: a publishing channel with
publisher confirms (every request is published ``mandatory`` and confirmed
before the call goes on), and an exclusive server-named reply queue whose
answers are matched to calls by ``correlation_id`` (docs/protocol.md,
Workflow request and Control requests). A lost connection fails the calls
waiting on it with :class:`~warren.BrokerError`; the next call connects
again.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Optional, Union

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

from .errors import BrokerError, Problem, Rejected, Timeout
from .report import Paused, Pruned, Report, WorkerInfo
from .request import WorkflowLike, control_body, new_id, workflow_body
from .schedules import Schedules
from .topology import CONTROL_ROUTING_KEY, Names, properties

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
CONTROL_TIMEOUT = 30.0


class _Default:
    """The default of a ``timeout``: the client's ``control_timeout``."""


DEFAULT = _Default()


class Client:
    """``Client(url=..., namespace=...)``: submits workflows and control
    requests to the schedulers of ``namespace``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        namespace: str = "warren",
        *,
        control_timeout: float = CONTROL_TIMEOUT,
    ) -> None:
        self.url = url
        self.names = Names(namespace)
        self.control_timeout = control_timeout
        self.schedule = Schedules(self._ask)
        """The ``schedule.*`` requests: ``client.schedule.create(...)``, ``get``,
        ``list``, ``pause``, ``resume``, ``trigger``, ``delete``."""
        self._connection: Optional[aio_pika.abc.AbstractConnection] = None
        self._channel: Optional[aio_pika.abc.AbstractChannel] = None
        self._exchange: Optional[aio_pika.abc.AbstractExchange] = None
        self._reply_to = ""
        self._waiting: dict[str, asyncio.Future[tuple[Optional[str], Any]]] = {}
        # Made in the loop that first connects (Python 3.9 binds a Lock to
        # the loop current when it is made).
        self._lock: Optional[asyncio.Lock] = None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connects now (calls connect by themselves when needed). Raises
        :class:`BrokerError` when ``{ns}.workflows`` does not exist: no
        scheduler has set the namespace up yet."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed:
                return
            try:
                conn = await aio_pika.connect(
                    self.url,
                    client_properties={"connection_name": f"warren-python {self.names.namespace}"},
                )
            except Exception as e:  # the connect errors of aio-pika share no base
                raise BrokerError(f"cannot connect to the broker: {e}") from e
            try:
                ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
                try:
                    exchange = await ch.get_exchange(self.names.workflows, ensure=True)
                except aio_pika.exceptions.ChannelClosed as e:
                    raise BrokerError(
                        f"exchange {self.names.workflows} does not exist: start a Warren "
                        f"scheduler with namespace {self.names.namespace!r} first ({e})"
                    ) from e
                replies = await ch.declare_queue("", exclusive=True, auto_delete=True)
                await replies.consume(self._on_reply, no_ack=True)
            except BaseException:
                await conn.close()
                raise
            conn.close_callbacks.add(self._on_close)
            self._connection, self._channel, self._exchange = conn, ch, exchange
            self._reply_to = replies.name

    async def close(self) -> None:
        """Closes the connection; calls still waiting fail."""
        conn, self._connection = self._connection, None
        if conn is not None and not conn.is_closed:
            await conn.close()
        self._fail_waiting("the client was closed")

    def _on_close(self, _sender: object, exc: Optional[BaseException]) -> None:
        self._fail_waiting(f"the connection to the broker closed: {exc}")

    def _fail_waiting(self, why: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for f in waiting.values():
            if not f.done():
                f.set_exception(BrokerError(why))

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        f = self._waiting.pop(message.correlation_id or "", None)
        if f is None or f.done():
            return  # an answer nobody waits for any more (timed out)
        try:
            f.set_result((message.type, json.loads(message.body)))
        except (ValueError, RecursionError) as e:
            f.set_exception(BrokerError(f"an answer that is not JSON: {e!r}"))

    async def _publish(
        self,
        body: dict[str, Any],
        routing_key: str,
        *,
        message_id: Optional[str] = None,
        wait: bool,
    ) -> Optional[asyncio.Future[tuple[Optional[str], Any]]]:
        await self.connect()
        assert self._exchange is not None
        extra: dict[str, Any] = {}
        future: Optional[asyncio.Future[tuple[Optional[str], Any]]] = None
        if wait:
            correlation_id = uuid.uuid4().hex
            future = asyncio.get_running_loop().create_future()
            self._waiting[correlation_id] = future
            extra = {"reply_to": self._reply_to, "correlation_id": correlation_id}
        if message_id is not None:
            extra["message_id"] = message_id
        message = aio_pika.Message(json.dumps(body).encode(), **properties(None, **extra))
        try:
            await self._exchange.publish(message, routing_key, mandatory=True)
        except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.DeliveryError) as e:
            if future is not None:
                self._waiting.pop(extra["correlation_id"], None)
            raise BrokerError(f"request not accepted by the broker: {e}") from e
        return future

    async def _await(
        self,
        future: asyncio.Future[tuple[Optional[str], Any]],
        timeout: Optional[float],
        what: str,
        workflow_id: Optional[str] = None,
    ) -> tuple[Optional[str], Any]:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            for k, f in list(self._waiting.items()):
                if f is future:
                    del self._waiting[k]
            raise Timeout(f"no answer to {what} within {timeout} s", workflow_id) from None

    async def _ask(
        self, body: dict[str, Any], timeout: Union[float, _Default, None] = DEFAULT
    ) -> Any:
        """Sends a control request and returns its answer's body (waiting
        ``timeout`` seconds; the client's ``control_timeout`` by default,
        ``None``: no limit); an ``invalid_control`` refusal raises
        :class:`Rejected`."""
        body = control_body(body)
        future = await self._publish(body, CONTROL_ROUTING_KEY, wait=True)
        assert future is not None
        limit = self.control_timeout if isinstance(timeout, _Default) else timeout
        _, answer = await self._await(
            future,
            limit,
            f"`{body['control']}`",
            body.get("workflow_id"),
        )
        if not isinstance(answer, dict):
            raise BrokerError(f"an answer that is not an object: {answer!r}")
        if answer.get("status") == "rejected" and any(
            isinstance(e, dict) and e.get("code") == "invalid_control"
            for e in answer.get("errors", [])
        ):
            report = Report.from_wire(answer)
            raise Rejected(report.errors, report, what=f"`{body['control']}`")
        return answer

    async def submit(self, workflow: WorkflowLike) -> str:
        """Publishes the workflow (checked locally first: an invalid one
        raises :class:`~warren.InvalidRequest` and nothing is sent) and
        returns its id, once the broker has confirmed it. The id is the
        workflow's, or a fresh one."""
        body = workflow_body(workflow)
        await self._publish(body, "", message_id=body["id"], wait=False)
        return str(body["id"])

    async def submit_and_wait(
        self, workflow: WorkflowLike, timeout: Optional[float] = None
    ) -> Report:
        """Submits and waits for the outcome (``timeout`` seconds, ``None``:
        no limit). Returns the final report, whatever the workflow became;
        raises :class:`~warren.Rejected` when the scheduler refuses it, with
        every ``{code, message, task}``, and :class:`~warren.Timeout`."""
        body = workflow_body(workflow)
        future = await self._publish(body, "", message_id=body["id"], wait=True)
        assert future is not None
        _, answer = await self._await(future, timeout, f"workflow {body['id']}", body["id"])
        report = Report.from_wire(answer)
        if report.status == "rejected":
            raise Rejected(report.errors, report, what=f"workflow {report.workflow_id}")
        return report

    async def status(
        self,
        workflow_id: str,
        task_id: Optional[str] = None,
        timeout: Union[float, _Default, None] = DEFAULT,
    ) -> Report:
        """The workflow's report now (status ``not_found`` for an unknown
        id); with ``task_id``, holding that task alone, its output in full."""
        body: dict[str, Any] = {"control": "status", "workflow_id": workflow_id}
        if task_id is not None:
            body["task_id"] = task_id
        return Report.from_wire(await self._ask(body, timeout))

    async def cancel(
        self, workflow_id: str, timeout: Union[float, _Default, None] = DEFAULT
    ) -> Report:
        """Cancels the workflow; returns its report (``cancelled``; as it
        ended if it had; ``not_found``)."""
        return Report.from_wire(
            await self._ask({"control": "cancel", "workflow_id": workflow_id}, timeout)
        )

    async def rerun(
        self,
        workflow_id: str,
        from_tasks: Optional[list[str]] = None,
        rerun_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Report:
        """Starts a new run of an ended workflow (``from``: the tasks to run
        again with everything downstream; default every task that did not
        succeed) and waits for that run's outcome. ``rerun_id`` makes asking
        again safe (a fresh one when not given). A refused rerun raises
        :class:`~warren.Rejected` (``workflow_running``, ``nothing_to_rerun``,
        ...)."""
        body: dict[str, Any] = {
            "control": "rerun",
            "workflow_id": workflow_id,
            "rerun_id": rerun_id or new_id("rerun"),
        }
        if from_tasks:
            body["from"] = list(from_tasks)
        answer = await self._ask(body, timeout)
        report = Report.from_wire(answer)
        if report.status == "rejected":
            raise Rejected(report.errors, report, what=f"rerun of {workflow_id}")
        return report

    async def workers(self, timeout: Union[float, _Default, None] = DEFAULT) -> list[WorkerInfo]:
        """The scheduler's worker registry."""
        answer = await self._ask({"control": "workers"}, timeout)
        items = answer.get("workers")
        return (
            [WorkerInfo.from_wire(w) for w in items if isinstance(w, dict)]
            if isinstance(items, list)
            else []
        )

    async def _pause(
        self,
        control: str,
        queue: Optional[str],
        type: Optional[str],
        timeout: Union[float, _Default, None],
    ) -> Paused:
        if (queue is None) == (type is None):
            raise ValueError(f"{control} takes exactly one of queue= and type=")
        body: dict[str, Any] = {"control": control}
        body["queue" if queue is not None else "type"] = queue if queue is not None else type
        answer = await self._ask(body, timeout)
        errors = answer.get("errors")
        if isinstance(errors, list) and errors:
            raise Rejected([Problem.from_wire(e) for e in errors], what=f"`{control}`")
        return Paused.from_wire(answer)

    async def pause(
        self,
        queue: Optional[str] = None,
        type: Optional[str] = None,
        timeout: Union[float, _Default, None] = DEFAULT,
    ) -> Paused:
        """Holds the dispatch of a task queue or a task type; returns what is
        paused now."""
        return await self._pause("pause", queue, type, timeout)

    async def resume(
        self,
        queue: Optional[str] = None,
        type: Optional[str] = None,
        timeout: Union[float, _Default, None] = DEFAULT,
    ) -> Paused:
        """Releases a paused queue or type; returns what is paused now."""
        return await self._pause("resume", queue, type, timeout)

    async def prune(
        self, older_than_ms: int, timeout: Union[float, _Default, None] = DEFAULT
    ) -> Pruned:
        """Deletes up to 10,000 workflows that ended longer ago than
        ``older_than_ms``; ``more`` says whether to ask again."""
        a = await self._ask({"control": "prune", "older_than_ms": older_than_ms}, timeout)
        return Pruned(int(a.get("pruned", 0)), str(a.get("before", "")), bool(a.get("more")))


__all__ = ["DEFAULT_URL", "Client", "Schedules"]

"""The blocking client, :class:`Client`: the asyncio client
(:mod:`warren.aio`) driven on an event loop of its own, in a daemon thread
the client starts at its first call. Every method blocks until its answer
(or its ``timeout``); the signatures and errors are those of
``warren.aio.Client``. Thread-safe: calls from several threads share the
one connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Optional, TypeVar, Union

from . import aio
from .aio import DEFAULT, DEFAULT_URL, _Default
from .report import Paused, Pruned, Report, WorkerInfo
from .request import WorkflowLike
from .schedules import ScheduleAnswer, SchedulesPage
from .workflow import Workflow

T = TypeVar("T")
Timeout = Union[float, None, _Default]


class _Loop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="warren-client", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class Client:
    """``Client(url=..., namespace=...)``, blocking. Use it as a context
    manager, or call :meth:`close`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        namespace: str = "warren",
        *,
        control_timeout: float = aio.CONTROL_TIMEOUT,
    ) -> None:
        self._aio = aio.Client(url, namespace, control_timeout=control_timeout)
        self._loop: Optional[_Loop] = None
        self._guard = threading.Lock()
        self.schedule = Schedules(self)
        """The ``schedule.*`` requests: ``client.schedule.create(...)``, ..."""

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._guard:
            if self._loop is None:
                self._loop = _Loop()
            loop = self._loop
        return loop.run(coro)

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        self._run(self._aio.connect())

    def close(self) -> None:
        with self._guard:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.run(self._aio.close())
            loop.stop()

    def submit(self, workflow: WorkflowLike) -> str:
        return self._run(self._aio.submit(workflow))

    def submit_and_wait(self, workflow: WorkflowLike, timeout: Optional[float] = None) -> Report:
        return self._run(self._aio.submit_and_wait(workflow, timeout))

    def status(
        self, workflow_id: str, task_id: Optional[str] = None, timeout: Timeout = DEFAULT
    ) -> Report:
        return self._run(self._aio.status(workflow_id, task_id, timeout))

    def cancel(self, workflow_id: str, timeout: Timeout = DEFAULT) -> Report:
        return self._run(self._aio.cancel(workflow_id, timeout))

    def rerun(
        self,
        workflow_id: str,
        from_tasks: Optional[list[str]] = None,
        rerun_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Report:
        return self._run(self._aio.rerun(workflow_id, from_tasks, rerun_id, timeout))

    def workers(self, timeout: Timeout = DEFAULT) -> list[WorkerInfo]:
        return self._run(self._aio.workers(timeout))

    def pause(
        self, queue: Optional[str] = None, type: Optional[str] = None, timeout: Timeout = DEFAULT
    ) -> Paused:
        return self._run(self._aio.pause(queue, type, timeout))

    def resume(
        self, queue: Optional[str] = None, type: Optional[str] = None, timeout: Timeout = DEFAULT
    ) -> Paused:
        return self._run(self._aio.resume(queue, type, timeout))

    def prune(self, older_than_ms: int, timeout: Timeout = DEFAULT) -> Pruned:
        return self._run(self._aio.prune(older_than_ms, timeout))


class Schedules:
    """The blocking ``schedule.*`` requests (``client.schedule``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _s(self) -> aio.Schedules:
        return self._client._aio.schedule

    def create(
        self,
        id: str,
        *,
        workflow: Union[Workflow, dict[str, Any]],
        cron: Optional[str] = None,
        every_ms: Optional[int] = None,
        timezone: Optional[str] = None,
        overlap: Optional[str] = None,
        catch_up: Optional[str] = None,
    ) -> ScheduleAnswer:
        return self._client._run(
            self._s().create(
                id,
                workflow=workflow,
                cron=cron,
                every_ms=every_ms,
                timezone=timezone,
                overlap=overlap,
                catch_up=catch_up,
            )
        )

    def get(self, schedule_id: str) -> ScheduleAnswer:
        return self._client._run(self._s().get(schedule_id))

    def list(self, after: Optional[str] = None, limit: Optional[int] = None) -> SchedulesPage:
        return self._client._run(self._s().list(after, limit))

    def pause(self, schedule_id: str) -> ScheduleAnswer:
        return self._client._run(self._s().pause(schedule_id))

    def resume(self, schedule_id: str) -> ScheduleAnswer:
        return self._client._run(self._s().resume(schedule_id))

    def trigger(self, schedule_id: str) -> ScheduleAnswer:
        return self._client._run(self._s().trigger(schedule_id))

    def delete(self, schedule_id: str) -> ScheduleAnswer:
        return self._client._run(self._s().delete(schedule_id))

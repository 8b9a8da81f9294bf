"""Cancelled workflows, as the scheduler announces them on ``{ns}.control``
(docs/protocol.md, Control notices): the running tasks of a cancelled run
are stopped, and its task messages still to come are acked unrun. A later
run (a ``rerun``) runs.

Bounded like the Rust worker's memory: running entries exist while a task
of the run runs; cancelled workflows are remembered for an hour and at most
:data:`REMEMBER_AT_MOST` of them, the oldest forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

REMEMBER_SECONDS = 3600.0
REMEMBER_AT_MOST = 10_000

Stop = Callable[[], None]


class Cancels:
    def __init__(
        self, cap: int = REMEMBER_AT_MOST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cap = max(cap, 1)
        self._clock = clock
        # workflow id -> (highest cancelled run, when heard), oldest first.
        self._cancelled: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # (workflow id, run) -> the stop callbacks of its running tasks.
        self._running: dict[tuple[str, int], dict[int, Stop]] = {}
        self._next = 0

    def is_cancelled(self, workflow_id: str, run: int) -> bool:
        self._expire()
        c = self._cancelled.get(workflow_id)
        return c is not None and c[0] >= run

    def enter(self, workflow_id: str, run: int, stop: Stop) -> int | None:
        """Registers a task of ``run`` of ``workflow_id`` about to run, with
        the callback that stops it; ``None`` when that run was cancelled.
        Returns a key for :meth:`leave`."""
        if self.is_cancelled(workflow_id, run):
            return None
        self._next += 1
        self._running.setdefault((workflow_id, run), {})[self._next] = stop
        return self._next

    def leave(self, workflow_id: str, run: int, key: int) -> None:
        tasks = self._running.get((workflow_id, run))
        if tasks is not None:
            tasks.pop(key, None)
            if not tasks:
                del self._running[(workflow_id, run)]

    def cancel(self, workflow_id: str, run: int) -> int:
        """Remembers ``run`` (and earlier runs) of ``workflow_id`` cancelled
        and stops their running tasks; returns how many were stopped."""
        self._expire()
        now = self._clock()
        old = self._cancelled.get(workflow_id)
        if old is not None:
            self._cancelled[workflow_id] = (max(old[0], run), old[1])
        else:
            while len(self._cancelled) >= self._cap:
                self._cancelled.popitem(last=False)
            self._cancelled[workflow_id] = (run, now)
        stopped = 0
        for (wf, r), tasks in list(self._running.items()):
            if wf == workflow_id and r <= run:
                for stop in list(tasks.values()):
                    stop()
                    stopped += 1
        return stopped

    def _expire(self) -> None:
        now = self._clock()
        while self._cancelled:
            _, (_, heard) = next(iter(self._cancelled.items()))
            if now - heard < REMEMBER_SECONDS:
                break
            self._cancelled.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cancelled)

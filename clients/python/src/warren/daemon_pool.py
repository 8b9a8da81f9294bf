"""A fixed pool of daemon threads for plain-function handlers.

Not :class:`concurrent.futures.ThreadPoolExecutor`, whose threads the
interpreter joins at exit: a handler that never returns (hung, or ignoring
its cancellation after a timeout) would then keep a stopped worker's
process alive forever. Here the process exits once :meth:`Worker.run`
returns, and the broker redelivers what was abandoned.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, Callable, Optional

_Job = Optional[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]]


class DaemonPool:
    def __init__(self, size: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        f: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((f, fn, args))
        return f

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            f, fn, args = job
            if not f.set_running_or_notify_cancel():
                continue
            try:
                f.set_result(fn(*args))
            except BaseException as e:
                f.set_exception(e)

    def shutdown(self) -> None:
        """Lets idle threads end; busy ones end with their handler (or with
        the process)."""
        for _ in self._threads:
            self._jobs.put(None)

"""What a handler may know of its task besides the input: :class:`Context`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Context:
    """The task a handler runs, passed as its second argument when it takes
    two: ids, attempt, and whether it should stop.

    ``cancelled`` turns true when the workflow was cancelled or the attempt
    ran past its ``timeout_ms``: no result is wanted any more. An ``async``
    handler is also cancelled (``asyncio.CancelledError`` at its next
    ``await``); a plain function cannot be interrupted, so a long one should
    look at ``ctx.cancelled`` (or ``ctx.wait_cancelled(seconds)`` instead of
    ``time.sleep``) and return early.
    """

    workflow_id: str
    task_id: str
    attempt: int
    max_attempts: int
    type: str
    run: int = 1
    message_id: str = ""
    worker_id: str = ""
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def wait_cancelled(self, timeout: float) -> bool:
        """Blocks up to ``timeout`` seconds; True as soon as the task is
        cancelled (use it in place of ``time.sleep`` in a plain function)."""
        return self._stop.wait(timeout)

    def _cancel(self) -> None:
        self._stop.set()

"""Warren from Python: submit and wait for workflows (:class:`Client`, and
``warren.aio.Client`` for asyncio), build them (:class:`Workflow`), and
serve their tasks (:class:`Worker`). See the package README.

Layout: ``client`` / ``aio`` (requests and answers), ``schedules``
(``schedule.*``), ``workflow`` (the builder), ``request`` and
``schema_check`` (local validation against the bundled ``schema/``),
``report`` (typed answers), ``errors``; the worker: ``worker`` (sessions,
drain), ``execution`` (one delivery), ``publisher`` (confirm, then ack),
``task_message``, ``cancels``, ``heartbeat``, ``handlers``, ``context``,
``daemon_pool``; ``topology`` (the broker names).
"""

from .client import Client
from .context import Context
from .errors import (
    BrokerError,
    Fatal,
    InvalidRequest,
    Problem,
    Rejected,
    Retry,
    Timeout,
    WarrenError,
)
from .report import (
    Paused,
    Pruned,
    Report,
    TaskError,
    TaskReport,
    TaskState,
    WorkerInfo,
    WorkflowStatus,
)
from .schedules import ScheduleAnswer, SchedulesPage
from .schema_check import validate
from .worker import Worker
from .workflow import Ref, RetryPolicy, Task, Workflow, index, item

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "Client",
    "Context",
    "Fatal",
    "InvalidRequest",
    "Paused",
    "Problem",
    "Pruned",
    "Ref",
    "Rejected",
    "Report",
    "Retry",
    "RetryPolicy",
    "ScheduleAnswer",
    "SchedulesPage",
    "Task",
    "TaskError",
    "TaskReport",
    "TaskState",
    "Timeout",
    "WarrenError",
    "Worker",
    "WorkerInfo",
    "Workflow",
    "WorkflowStatus",
    "index",
    "item",
    "validate",
]

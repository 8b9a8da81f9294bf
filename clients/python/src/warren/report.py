"""Typed views of what the scheduler answers: workflow reports
(:class:`Report`, :class:`TaskReport`), the worker registry
(:class:`WorkerInfo`), pauses and prunes.

Warren's answers are read leniently (docs/protocol.md, Versioning): unknown
fields are kept in ``raw`` and ignored, and a state or status this version
does not know becomes a member of its enum all the same (not final).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from .errors import Problem


class _OpenEnum(str, Enum):
    """A str enum that accepts values added by newer schedulers; prints as
    its value."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        return member


class WorkflowStatus(_OpenEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"

    @property
    def is_final(self) -> bool:
        """True for an outcome (``succeeded``, ``failed``, ``rejected``,
        ``cancelled``); statuses this version does not know are not final."""
        return self in _FINAL_STATUSES


_FINAL_STATUSES = frozenset(
    {
        WorkflowStatus.SUCCEEDED,
        WorkflowStatus.FAILED,
        WorkflowStatus.REJECTED,
        WorkflowStatus.CANCELLED,
    }
)


class TaskState(_OpenEnum):
    PENDING = "pending"
    DELAYED = "delayed"
    READY = "ready"
    RUNNING = "running"
    RETRYING = "retrying"
    MAPPED = "mapped"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATES


_FINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED}
)


@dataclass(frozen=True)
class TaskError:
    """The error of a task's last failed attempt."""

    message: str
    retryable: bool = False


def _str(d: dict[str, Any], key: str) -> Optional[str]:
    v = d.get(key)
    return v if isinstance(v, str) else None


@dataclass(frozen=True)
class TaskReport:
    """One task of a :class:`Report`."""

    state: TaskState
    attempts: int
    output: Any = None
    error: Optional[TaskError] = None
    depends_on: list[str] = field(default_factory=list)
    skip_reason: Optional[str] = None
    worker: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    output_elided: Optional[int] = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @staticmethod
    def from_wire(d: dict[str, Any]) -> TaskReport:
        err = d.get("error")
        error = (
            TaskError(str(err.get("message", "")), bool(err.get("retryable", False)))
            if isinstance(err, dict)
            else None
        )
        deps = d.get("depends_on")
        elided = d.get("output_elided")
        return TaskReport(
            state=TaskState(str(d.get("state", ""))),
            attempts=int(d.get("attempts", 0)),
            output=d.get("output"),
            error=error,
            depends_on=[str(x) for x in deps] if isinstance(deps, list) else [],
            skip_reason=_str(d, "skip_reason"),
            worker=_str(d, "worker"),
            started_at=_str(d, "started_at"),
            finished_at=_str(d, "finished_at"),
            output_elided=elided if isinstance(elided, int) else None,
            raw=d,
        )


@dataclass(frozen=True)
class Report:
    """A workflow report: an outcome, or the answer to ``status`` or
    ``cancel`` (docs/protocol.md, Workflow report)."""

    workflow_id: str
    status: WorkflowStatus
    tasks: dict[str, TaskReport]
    name: Optional[str] = None
    error: Optional[str] = None
    errors: list[Problem] = field(default_factory=list)
    created_at: Optional[str] = None
    finished_at: Optional[str] = None
    not_before: Optional[str] = None
    run: int = 1
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @staticmethod
    def from_wire(d: dict[str, Any]) -> Report:
        tasks = d.get("tasks")
        errors = d.get("errors")
        run = d.get("run")
        return Report(
            workflow_id=str(d.get("workflow_id", "")),
            status=WorkflowStatus(str(d.get("status", ""))),
            tasks={
                str(k): TaskReport.from_wire(v)
                for k, v in (tasks.items() if isinstance(tasks, dict) else [])
                if isinstance(v, dict)
            },
            name=_str(d, "name"),
            error=_str(d, "error"),
            errors=[Problem.from_wire(e) for e in errors] if isinstance(errors, list) else [],
            created_at=_str(d, "created_at"),
            finished_at=_str(d, "finished_at"),
            not_before=_str(d, "not_before"),
            run=run if isinstance(run, int) else 1,
            raw=d,
        )

    @property
    def succeeded(self) -> bool:
        return self.status is WorkflowStatus.SUCCEEDED

    def output(self, task_id: str) -> Any:
        """The output of ``task_id`` (``None`` when it has none)."""
        return self.tasks[task_id].output


@dataclass(frozen=True)
class WorkerInfo:
    """One worker of the scheduler's registry (the ``workers`` answer)."""

    worker_id: str
    state: str
    queues: list[str]
    concurrency: int
    in_flight: int
    last_seen: Optional[str] = None
    host: Optional[str] = None
    pid: Optional[int] = None
    version: Optional[str] = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @staticmethod
    def from_wire(d: dict[str, Any]) -> WorkerInfo:
        queues = d.get("queues")
        pid = d.get("pid")
        return WorkerInfo(
            worker_id=str(d.get("worker_id", "")),
            state=str(d.get("state", "")),
            queues=[str(q) for q in queues] if isinstance(queues, list) else [],
            concurrency=int(d.get("concurrency", 0)),
            in_flight=int(d.get("in_flight", 0)),
            last_seen=_str(d, "last_seen"),
            host=_str(d, "host"),
            pid=pid if isinstance(pid, int) else None,
            version=_str(d, "version"),
            raw=d,
        )


@dataclass(frozen=True)
class Paused:
    """What is paused now (the answer to ``pause`` and ``resume``): queue and
    type names, each with the time it was first paused."""

    queues: dict[str, str]
    types: dict[str, str]

    @staticmethod
    def from_wire(d: dict[str, Any]) -> Paused:
        paused = d.get("paused") if isinstance(d.get("paused"), dict) else {}
        assert isinstance(paused, dict)

        def names(key: str) -> dict[str, str]:
            items = paused.get(key)
            return {
                str(p.get("name")): str(p.get("since", ""))
                for p in (items if isinstance(items, list) else [])
                if isinstance(p, dict)
            }

        return Paused(queues=names("queues"), types=names("types"))


@dataclass(frozen=True)
class Pruned:
    """The answer to ``prune``: how many ended workflows were deleted, and
    whether ``more`` are left (ask again)."""

    pruned: int
    before: str
    more: bool

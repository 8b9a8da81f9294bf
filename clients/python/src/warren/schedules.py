"""The ``schedule.*`` control requests (docs/protocol.md, Schedules), as
``client.schedule.create``, ``get``, ``list``, ``pause``, ``resume``,
``trigger`` and ``delete``: one method per request, named after it."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from .errors import Problem, Rejected
from .workflow import Workflow

Ask = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ScheduleAnswer:
    """The answer about one schedule (``warren.schedule``): ``outcome`` is
    ``created``, ``found``, ``paused``, ``resumed``, ``triggered``,
    ``skipped``, ``deleted`` or ``not_found``; ``schedule`` the schedule as
    the scheduler shows it; ``workflow_id`` the workflow a trigger
    submitted."""

    schedule_id: str
    outcome: str
    schedule: Optional[dict[str, Any]] = None
    workflow_id: Optional[str] = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @staticmethod
    def from_wire(d: dict[str, Any], what: str) -> ScheduleAnswer:
        if d.get("outcome") == "rejected":
            errors = d.get("errors")
            problems = [Problem.from_wire(e) for e in errors] if isinstance(errors, list) else []
            raise Rejected(problems, what=what)
        s = d.get("schedule")
        w = d.get("workflow_id")
        return ScheduleAnswer(
            schedule_id=str(d.get("schedule_id", "")),
            outcome=str(d.get("outcome", "")),
            schedule=s if isinstance(s, dict) else None,
            workflow_id=w if isinstance(w, str) else None,
            raw=d,
        )


@dataclass(frozen=True)
class SchedulesPage:
    """A page of ``schedule.list``: ``next_after`` is set when the page is
    full (pass it as ``after`` for the next)."""

    schedules: list[dict[str, Any]]
    next_after: Optional[str] = None


class Schedules:
    """The ``schedule.*`` requests of one client (``client.schedule``)."""

    def __init__(self, ask: Ask) -> None:
        self._ask = ask

    async def create(
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
        """``schedule.create``: exactly one of ``cron`` and ``every_ms``;
        ``workflow`` without ``id`` (each firing's is derived). A refused
        schedule raises :class:`~warren.Rejected` with every problem."""
        wf = workflow.to_dict() if isinstance(workflow, Workflow) else dict(workflow)
        schedule: dict[str, Any] = {"id": id, "workflow": wf}
        for key, value in (
            ("cron", cron),
            ("every_ms", every_ms),
            ("timezone", timezone),
            ("overlap", overlap),
            ("catch_up", catch_up),
        ):
            if value is not None:
                schedule[key] = value
        answer = await self._ask({"control": "schedule.create", "schedule": schedule})
        return ScheduleAnswer.from_wire(answer, f"schedule {id}")

    async def _one(self, control: str, schedule_id: str) -> ScheduleAnswer:
        answer = await self._ask({"control": control, "schedule_id": schedule_id})
        return ScheduleAnswer.from_wire(answer, f"`{control}` of {schedule_id}")

    async def get(self, schedule_id: str) -> ScheduleAnswer:
        """``schedule.get``: ``found`` with the schedule (and its workflow),
        or ``not_found``."""
        return await self._one("schedule.get", schedule_id)

    async def list(self, after: Optional[str] = None, limit: Optional[int] = None) -> SchedulesPage:
        """``schedule.list``: the schedules after ``after``, in id order, at
        most ``limit`` (1 to 1,000)."""
        body: dict[str, Any] = {"control": "schedule.list"}
        if after is not None:
            body["after"] = after
        if limit is not None:
            body["limit"] = limit
        answer = await self._ask(body)
        items = answer.get("schedules")
        nxt = answer.get("next_after")
        return SchedulesPage(
            [s for s in items if isinstance(s, dict)] if isinstance(items, list) else [],
            nxt if isinstance(nxt, str) else None,
        )

    async def pause(self, schedule_id: str) -> ScheduleAnswer:
        """``schedule.pause``: holds its firings."""
        return await self._one("schedule.pause", schedule_id)

    async def resume(self, schedule_id: str) -> ScheduleAnswer:
        """``schedule.resume``: fires again from its next firing."""
        return await self._one("schedule.resume", schedule_id)

    async def trigger(self, schedule_id: str) -> ScheduleAnswer:
        """``schedule.trigger``: fires once now (``triggered`` with the
        workflow id, or ``skipped`` by ``overlap: skip``)."""
        return await self._one("schedule.trigger", schedule_id)

    async def delete(self, schedule_id: str) -> ScheduleAnswer:
        """``schedule.delete``: removes it; its workflows run on."""
        return await self._one("schedule.delete", schedule_id)

"""Turning what a caller passes (a :class:`~warren.Workflow` or a plain
dict) into a request body, checked against the bundled schemas first."""

from __future__ import annotations

import re
import uuid
from typing import Any, Union

from .errors import InvalidRequest, Problem
from .schema_check import validate
from .workflow import Workflow, to_json

WorkflowLike = Union[Workflow, dict[str, Any]]

_TASK_PATH = re.compile(r"^\$\.tasks\[(\d+)\]")
_SCHEDULE_TASK_PATH = re.compile(r"^\$\.schedule\.workflow\.tasks\[(\d+)\]")


def new_id(prefix: str = "py") -> str:
    """A fresh id of the allowed form (``py-`` and 24 hex digits)."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def workflow_body(workflow: WorkflowLike) -> dict[str, Any]:
    """The request body of ``workflow``, with an ``id`` (a fresh one when
    it has none; the caller's object is not changed), checked against
    workflow-request.json: raises :class:`InvalidRequest` listing every
    problem."""
    body = workflow.to_dict() if isinstance(workflow, Workflow) else to_json(workflow)
    if not isinstance(body, dict):
        raise InvalidRequest([Problem("schema", "a workflow request must be an object")])
    body.setdefault("id", new_id())
    check(body, "workflow-request", _TASK_PATH)
    return body


def control_body(body: dict[str, Any]) -> dict[str, Any]:
    """A control request, checked against control-request.json."""
    body = to_json(body)
    check(body, "control-request", _SCHEDULE_TASK_PATH)
    return body


def check(body: dict[str, Any], schema: str, task_path: re.Pattern[str]) -> None:
    problems = validate(body, schema)
    if not problems:
        return
    tasks = _tasks_of(body, schema)
    out = []
    for p in problems:
        task = None
        m = task_path.match(p.path)
        if m and int(m.group(1)) < len(tasks):
            t = tasks[int(m.group(1))]
            task = t.get("id") if isinstance(t, dict) and isinstance(t.get("id"), str) else None
        out.append(Problem("schema", str(p), task))
    raise InvalidRequest(out, what=f"{schema} (checked locally, not sent)")


def _tasks_of(body: dict[str, Any], schema: str) -> list[Any]:
    if schema == "control-request":
        s = body.get("schedule")
        wf = s.get("workflow") if isinstance(s, dict) else None
        body = wf if isinstance(wf, dict) else {}
    tasks = body.get("tasks")
    return tasks if isinstance(tasks, list) else []

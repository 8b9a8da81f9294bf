"""Building a workflow request in Python: :class:`Workflow`, its
:class:`Task` s and the :class:`Ref` templates between them.

The result means exactly what the JSON request means (docs/protocol.md,
Workflow request): ``Workflow.to_dict()`` is that JSON. ``a.output["rows"]``
is the template ``${a.output.rows}``, ``wf.input["x"]`` is
``${workflow.input.x}``, and :data:`item` / :data:`index` are a mapped
task's ``${item...}`` and ``${index}``. A :class:`Ref` becomes its template
string wherever it stands in an input (alone, it is replaced by the value
with its JSON type; inside an f-string, by its text).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional, Union


class Ref:
    """A template: ``${root.a.b}``. Index it to go deeper (``ref["a"][0]``)."""

    __slots__ = ("_path",)

    def __init__(self, *path: Union[str, int]) -> None:
        self._path: tuple[Union[str, int], ...] = path

    def __getitem__(self, key: Union[str, int]) -> Ref:
        if isinstance(key, str) and ("." in key or "}" in key or not key):
            raise ValueError(f"a template key cannot be empty or hold `.` or `}}`: {key!r}")
        return Ref(*self._path, key)

    @property
    def template(self) -> str:
        return "${" + ".".join(str(p) for p in self._path) + "}"

    def __str__(self) -> str:
        return self.template

    def __repr__(self) -> str:
        return f"Ref({self.template!r})"

    def __format__(self, spec: str) -> str:
        return format(self.template, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)


item = Ref("item")
"""A mapped task's element, in its input: ``item["path"]`` is ``${item.path}``."""

index = Ref("index")
"""A mapped task's position, in its input: ``${index}``."""


def to_json(value: Any) -> Any:
    """``value`` with every :class:`Ref` replaced by its template string and
    every :class:`Task` by its id (copied; the argument is left as it is)."""
    if isinstance(value, Ref):
        return value.template
    if isinstance(value, Task):
        return value.id
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return copy.copy(value)


@dataclass
class RetryPolicy:
    """A task's ``retry``: attempts in all, and the backoff before the
    second (doubled each time, capped at ``max_backoff_ms``)."""

    max_attempts: int = 1
    backoff_ms: Optional[int] = None
    max_backoff_ms: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"max_attempts": self.max_attempts}
        if self.backoff_ms is not None:
            d["backoff_ms"] = self.backoff_ms
        if self.max_backoff_ms is not None:
            d["max_backoff_ms"] = self.max_backoff_ms
        return d


class Task:
    """A task of a :class:`Workflow`; made by :meth:`Workflow.task`."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    @property
    def id(self) -> str:
        return str(self._fields["id"])

    @property
    def output(self) -> Ref:
        """This task's output as a template: ``${id.output}``; index it for a
        path (``task.output["rows"]`` is ``${id.output.rows}``)."""
        return Ref(self.id, "output")

    def to_dict(self) -> dict[str, Any]:
        return {k: to_json(v) for k, v in self._fields.items()}

    def __repr__(self) -> str:
        return f"Task({self.id!r})"


_UNSET: Any = object()


class Workflow:
    """A workflow request under construction.

    ``Workflow(name, input=..., id=..., priority=..., max_concurrency=...,
    not_before=..., delay_ms=..., expires_at=..., deadline_ms=...,
    on_failure=...)``: each keyword is the request field of that name, left
    out when not given. ``extra`` adds fields as they are (for fields newer
    than this package).
    """

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        input: Any = _UNSET,
        id: Optional[str] = None,
        priority: Optional[int] = None,
        max_concurrency: Optional[int] = None,
        not_before: Optional[str] = None,
        delay_ms: Optional[int] = None,
        expires_at: Optional[str] = None,
        deadline_ms: Optional[int] = None,
        on_failure: Optional[str] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> None:
        self._fields: dict[str, Any] = {}
        for key, value in (
            ("id", id),
            ("name", name),
            ("priority", priority),
            ("max_concurrency", max_concurrency),
            ("not_before", not_before),
            ("delay_ms", delay_ms),
            ("expires_at", expires_at),
            ("deadline_ms", deadline_ms),
            ("on_failure", on_failure),
        ):
            if value is not None:
                self._fields[key] = value
        if input is not _UNSET:
            self._fields["input"] = input
        self._fields.update(extra or {})
        self._tasks: list[Task] = []

    @property
    def id(self) -> Optional[str]:
        """The workflow id, when one was given (``submit`` sets one if not)."""
        v = self._fields.get("id")
        return v if isinstance(v, str) else None

    @id.setter
    def id(self, value: str) -> None:
        self._fields["id"] = value

    @property
    def input(self) -> Ref:
        """The workflow's input as a template: ``${workflow.input}``; index it
        for a path."""
        return Ref("workflow", "input")

    @property
    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def task(
        self,
        id: str,
        *,
        type: str,
        queue: Optional[str] = None,
        depends_on: Optional[list[Union[Task, str]]] = None,
        input: Any = _UNSET,
        retry: Union[RetryPolicy, dict[str, Any], int, None] = None,
        timeout_ms: Optional[int] = None,
        duration_hint_ms: Optional[int] = None,
        delay_ms: Optional[int] = None,
        run_if: Optional[str] = None,
        when: Optional[str] = None,
        map: Union[Ref, str, None] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> Task:
        """Adds a task and returns it. Each keyword is the task field of that
        name, left out when not given; ``depends_on`` takes tasks or ids;
        ``retry`` takes a :class:`RetryPolicy`, a dict, or an int (the
        ``max_attempts``)."""
        if any(t.id == id for t in self._tasks):
            raise ValueError(f"task `{id}` is already in workflow {self._fields.get('name')!r}")
        fields: dict[str, Any] = {"id": id, "type": type}
        if queue is not None:
            fields["queue"] = queue
        if depends_on:
            fields["depends_on"] = [d.id if isinstance(d, Task) else d for d in depends_on]
        if input is not _UNSET:
            fields["input"] = input
        if isinstance(retry, RetryPolicy):
            fields["retry"] = retry.to_dict()
        elif isinstance(retry, int):
            fields["retry"] = {"max_attempts": retry}
        elif retry is not None:
            fields["retry"] = dict(retry)
        for key, value in (
            ("timeout_ms", timeout_ms),
            ("duration_hint_ms", duration_hint_ms),
            ("delay_ms", delay_ms),
            ("run_if", run_if),
            ("when", when),
            ("map", map),
        ):
            if value is not None:
                fields[key] = value
        fields.update(extra or {})
        t = Task(fields)
        self._tasks.append(t)
        return t

    def to_dict(self) -> dict[str, Any]:
        """The JSON request (a new dict each call)."""
        d = {k: to_json(v) for k, v in self._fields.items()}
        d["tasks"] = [t.to_dict() for t in self._tasks]
        return d

    def __repr__(self) -> str:
        return f"Workflow({self._fields.get('name')!r}, tasks={[t.id for t in self._tasks]})"

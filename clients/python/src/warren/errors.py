"""The exceptions of the package.

Two families: what a client call raises (:class:`WarrenError` and its
subclasses), and what a task handler raises to say how its attempt failed
(:class:`Retry`, :class:`Fatal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .report import Report


@dataclass(frozen=True)
class Problem:
    """One problem of a rejected request, as the scheduler lists them:
    ``{code, message, task?}`` (docs/protocol.md, Validation)."""

    code: str
    message: str
    task: Optional[str] = None

    @staticmethod
    def from_wire(d: Any) -> Problem:
        if not isinstance(d, dict):
            return Problem("invalid_answer", f"a problem that is not an object: {d!r}")
        task = d.get("task")
        return Problem(
            str(d.get("code", "")),
            str(d.get("message", "")),
            task if isinstance(task, str) else None,
        )

    def __str__(self) -> str:
        where = f" (task `{self.task}`)" if self.task else ""
        return f"{self.code}: {self.message}{where}"


class WarrenError(Exception):
    """Base of every error a :class:`warren.Client` call raises."""


class Rejected(WarrenError):
    """A request was refused. ``errors`` holds every problem; ``report`` the
    scheduler's answer when it came from the scheduler (``None`` when the
    request was refused locally, before it was sent)."""

    def __init__(
        self, errors: list[Problem], report: Optional[Report] = None, what: str = "request"
    ) -> None:
        self.errors = list(errors)
        self.report = report
        lines = "; ".join(str(p) for p in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"{what} rejected: {lines}{more}")


class InvalidRequest(Rejected):
    """Refused locally: the request does not match the bundled JSON Schema
    (code ``schema``, one :class:`Problem` per violation, ``task`` naming the
    task when the violation is inside one). Nothing was sent."""


class Timeout(WarrenError, TimeoutError):
    """No answer within the time given. ``workflow_id`` names the workflow
    when the call concerned one (it may still run)."""

    def __init__(self, message: str, workflow_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class BrokerError(WarrenError):
    """The broker refused or lost something: not connected, a message
    returned as unroutable or not confirmed, a topology that is missing."""


class Retry(Exception):
    """Raise in a handler: the attempt fails as retryable. The scheduler
    runs another attempt when the task's ``retry.max_attempts`` allows."""


class Fatal(Exception):
    """Raise in a handler: the attempt fails and is not retried (any
    exception other than :class:`Retry` fails the same way)."""

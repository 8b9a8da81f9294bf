"""Reading a task message and writing its result (docs/protocol.md, Task
message and Task result), as strictly as Warren's own worker: a body that is
not a whole task message is failed by its ids when they can be read, and
dead-lettered when not; it never stops the worker."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Optional

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


class Undecodable(ValueError):
    """A body that is not a task message; the message says why."""


def _int(v: Any, what: str, top: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
        raise Undecodable(f"`{what}` must be an integer from 0 to {top}, not {json.dumps(v)[:60]}")
    return int(v)


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise Undecodable(f"`{what}` must be a string, not {json.dumps(v)[:60]}")
    return v


@dataclass
class TaskMessage:
    workflow_id: str
    task_id: str
    attempt: int
    type: str
    input: Any
    timeout_ms: Optional[int]
    max_attempts: int
    token: str
    run: int

    @staticmethod
    def decode(body: bytes) -> TaskMessage:
        """The task message in ``body``; :class:`Undecodable` otherwise."""
        try:
            d = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise Undecodable(f"not JSON: {e}") from None
        except RecursionError:
            raise Undecodable("JSON nested too deeply to read") from None
        if not isinstance(d, dict):
            raise Undecodable("not a JSON object")
        for key in ("workflow_id", "task_id", "attempt", "type"):
            if key not in d:
                raise Undecodable(f"missing field `{key}`")
        timeout = d.get("timeout_ms")
        return TaskMessage(
            workflow_id=_str(d["workflow_id"], "workflow_id"),
            task_id=_str(d["task_id"], "task_id"),
            attempt=_int(d["attempt"], "attempt", U32_MAX),
            type=_str(d["type"], "type"),
            input=d.get("input"),
            timeout_ms=None if timeout is None else _int(timeout, "timeout_ms", U64_MAX),
            max_attempts=_int(d.get("max_attempts", 1), "max_attempts", U32_MAX),
            token=_str(d.get("token", ""), "token"),
            run=_int(d.get("run", 1), "run", U32_MAX),
        )

    @staticmethod
    def readable_ids(body: bytes) -> Optional[TaskMessage]:
        """The ids (and token) of a body that did not decode as a whole:
        enough to answer its attempt with a failed result; ``None`` when even
        they cannot be read."""
        try:
            d = json.loads(body)
            token = d.get("token")
            run = d.get("run")
            return TaskMessage(
                workflow_id=_str(d["workflow_id"], "workflow_id"),
                task_id=_str(d["task_id"], "task_id"),
                attempt=_int(d["attempt"], "attempt", U32_MAX),
                type="",
                input=None,
                timeout_ms=None,
                max_attempts=1,
                token=token if isinstance(token, str) else "",
                run=run if isinstance(run, int) and not isinstance(run, bool) else 1,
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None

    @property
    def message_id(self) -> str:
        return f"{self.workflow_id}/{self.task_id}/{self.attempt}"

    def result(
        self,
        worker: str,
        started_at: str,
        *,
        output: Any = None,
        error: Optional[tuple[str, bool]] = None,
    ) -> dict[str, Any]:
        """The result body: succeeded with ``output``, or failed with
        ``error`` = (message, retryable)."""
        r: dict[str, Any] = {
            "workflow_id": self.workflow_id,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "token": self.token,
            "worker": worker,
            "started_at": started_at,
            "finished_at": now(),
        }
        if error is None:
            r["status"] = "succeeded"
            r["output"] = output
        else:
            r["status"] = "failed"
            r["error"] = {"message": error[0], "retryable": error[1]}
        return r


def now() -> str:
    """The time now, RFC 3339 UTC with milliseconds."""
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def encode_result(result: dict[str, Any], limit: int) -> bytes:
    """The result's JSON; over ``limit`` bytes (or not JSON at all), a
    failed, non-retryable result saying so instead, as Warren's worker
    answers."""
    try:
        body = json.dumps(result, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as e:
        failed = dict(
            result,
            status="failed",
            error={
                "message": f"the output of task `{result['task_id']}` is not JSON: {e}",
                "retryable": False,
            },
        )
        failed.pop("output", None)
        return json.dumps(failed, separators=(",", ":")).encode()
    if len(body) <= limit:
        return body
    failed = dict(
        result,
        status="failed",
        error={
            "message": (
                f"the result of task `{result['task_id']}` is {len(body)} bytes of JSON, "
                f"over the worker's limit of {limit} bytes (WARREN_MAX_RESULT_BYTES); "
                "it was not published"
            ),
            "retryable": False,
        },
    )
    failed.pop("output", None)
    return json.dumps(failed, separators=(",", ":")).encode()

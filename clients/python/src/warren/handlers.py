"""The handlers a worker registered, by task type, and how each is called:
``fn(input)`` or ``fn(input, ctx)`` (see :class:`~warren.Context`), an
``async def`` awaited on the worker's event loop, a plain function run in
the worker's thread pool."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Handler:
    fn: Callable[..., Any]
    is_async: bool
    takes_context: bool

    @staticmethod
    def of(fn: Callable[..., Any]) -> Handler:
        if not callable(fn):
            raise TypeError(f"a handler must be callable, not {fn!r}")
        params = list(inspect.signature(fn).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
        if not positional and not varargs:
            raise TypeError(f"handler {fn!r} must take the task's input as its first argument")
        takes_context = varargs or len(positional) >= 2
        call = getattr(fn, "__call__", None)  # noqa: B004 (an object with async __call__)
        is_async = inspect.iscoroutinefunction(fn) or (
            not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)
        )
        return Handler(fn, is_async, takes_context)

    def args(self, input: Any, ctx: Any) -> tuple[Any, ...]:
        return (input, ctx) if self.takes_context else (input,)

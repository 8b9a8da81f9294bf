"""Validation against the JSON Schemas bundled in ``warren/schema/``.

The schemas are copies of ``docs/schema/*.json`` (a test fails when they
drift). The package needs no JSON Schema library: this module implements the
subset of draft 2020-12 those schemas use, and refuses to load a schema that
uses any other keyword (:data:`KEYWORDS`), so a schema that grows past the
subset fails loudly instead of being checked partly.

``format`` is an annotation in draft 2020-12 and is not asserted, as in
``jsonschema``'s default behaviour; the scheduler checks times itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Callable

# Keywords that assert something, and the ones that are only annotations.
ASSERTIONS = frozenset(
    {
        "type",
        "properties",
        "additionalProperties",
        "required",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "enum",
        "const",
        "$ref",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "propertyNames",
    }
)
ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "title", "description", "default", "examples", "format"}
)
KEYWORDS = ASSERTIONS | ANNOTATIONS

# The schema files of the protocol, by the name callers use.
SCHEMAS = (
    "control-notice",
    "control-request",
    "pauses-report",
    "prune-report",
    "schedule-report",
    "schedules-page",
    "task-message",
    "task-result",
    "task-results",
    "worker-heartbeat",
    "workers-report",
    "workflow-progress",
    "workflow-report",
    "workflow-request",
)


@dataclass(frozen=True)
class SchemaProblem:
    """One way an instance breaks a schema: where (a JSON path) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class UnsupportedSchema(Exception):
    """A schema uses a keyword this validator does not implement."""


@cache
def load(name: str) -> dict[str, Any]:
    """The bundled schema ``name`` (``"workflow-request"``), checked to use
    only the supported keywords."""
    if name not in SCHEMAS:
        raise KeyError(f"no bundled schema `{name}`; known: {', '.join(SCHEMAS)}")
    text = resources.files("warren").joinpath("schema").joinpath(f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    _check_keywords(schema, name, "#")
    return schema


def _check_keywords(node: Any, name: str, at: str) -> None:
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key not in KEYWORDS:
            raise UnsupportedSchema(f"schema {name} uses `{key}` at {at}, not supported")
        if key in ("properties", "$defs"):
            for sub, s in value.items():
                _check_keywords(s, name, f"{at}/{key}/{sub}")
        elif key in ("allOf", "anyOf", "oneOf"):
            for i, s in enumerate(value):
                _check_keywords(s, name, f"{at}/{key}/{i}")
        elif key in ("items", "not", "if", "then", "else", "additionalProperties", "propertyNames"):
            _check_keywords(value, name, f"{at}/{key}")


def validate(instance: Any, name: str) -> list[SchemaProblem]:
    """Every problem of ``instance`` against the bundled schema ``name``
    (empty when it is valid)."""
    root = load(name)
    problems: list[SchemaProblem] = []
    _Validator(root).check(instance, root, "$", problems)
    return problems


def _is_integer(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(type(a) is type(b) or (_TYPES["number"](a) and _TYPES["number"](b))) and a == b


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class _Validator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise UnsupportedSchema(f"only local $ref are supported, not `{ref}`")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def valid(self, v: Any, schema: Any, at: str) -> bool:
        probe: list[SchemaProblem] = []
        self.check(v, schema, at, probe)
        return not probe

    def check(self, v: Any, s: Any, at: str, out: list[SchemaProblem]) -> None:
        if s is True or s == {}:
            return
        if s is False:
            out.append(SchemaProblem(at, "no value is allowed here"))
            return
        if "$ref" in s:
            self.check(v, self.resolve(s["$ref"]), at, out)
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if not any(_TYPES[t](v) for t in types):
                out.append(SchemaProblem(at, f"{_show(v)} is not of type {' or '.join(types)}"))
                return
        if "enum" in s and not any(_equal(v, e) for e in s["enum"]):
            allowed = ", ".join(json.dumps(e) for e in s["enum"])
            out.append(SchemaProblem(at, f"{_show(v)} is not one of {allowed}"))
        if "const" in s and not _equal(v, s["const"]):
            out.append(SchemaProblem(at, f"{_show(v)} is not {json.dumps(s['const'])}"))
        if isinstance(v, str):
            self.check_string(v, s, at, out)
        if _TYPES["number"](v):
            if "minimum" in s and v < s["minimum"]:
                out.append(SchemaProblem(at, f"{v} is less than the minimum of {s['minimum']}"))
            if "maximum" in s and v > s["maximum"]:
                out.append(SchemaProblem(at, f"{v} is more than the maximum of {s['maximum']}"))
        if isinstance(v, list):
            self.check_array(v, s, at, out)
        if isinstance(v, dict):
            self.check_object(v, s, at, out)
        self.check_combinators(v, s, at, out)

    def check_string(self, v: str, s: dict[str, Any], at: str, out: list[SchemaProblem]) -> None:
        if "minLength" in s and len(v) < s["minLength"]:
            out.append(SchemaProblem(at, f"{_show(v)} is shorter than {s['minLength']}"))
        if "maxLength" in s and len(v) > s["maxLength"]:
            out.append(SchemaProblem(at, f"{_show(v)} is longer than {s['maxLength']}"))
        if "pattern" in s and not _regex(s["pattern"]).search(v):
            out.append(SchemaProblem(at, f"{_show(v)} does not match {s['pattern']}"))

    def check_array(
        self, v: list[Any], s: dict[str, Any], at: str, out: list[SchemaProblem]
    ) -> None:
        if "minItems" in s and len(v) < s["minItems"]:
            out.append(SchemaProblem(at, f"has {len(v)} items, fewer than {s['minItems']}"))
        if "maxItems" in s and len(v) > s["maxItems"]:
            out.append(SchemaProblem(at, f"has {len(v)} items, more than {s['maxItems']}"))
        if s.get("uniqueItems"):
            for i, x in enumerate(v):
                if any(_equal(x, y) for y in v[:i]):
                    out.append(SchemaProblem(at, f"{_show(x)} appears more than once"))
                    break
        if "items" in s:
            for i, x in enumerate(v):
                self.check(x, s["items"], f"{at}[{i}]", out)

    def check_object(
        self, v: dict[str, Any], s: dict[str, Any], at: str, out: list[SchemaProblem]
    ) -> None:
        for key in s.get("required", []):
            if key not in v:
                out.append(SchemaProblem(at, f"`{key}` is required"))
        props: dict[str, Any] = s.get("properties", {})
        for key, value in v.items():
            if key in props:
                self.check(value, props[key], f"{at}.{key}", out)
            elif "additionalProperties" in s:
                extra = s["additionalProperties"]
                if extra is False:
                    out.append(SchemaProblem(at, f"unknown field `{key}`"))
                else:
                    self.check(value, extra, f"{at}.{key}", out)
            if "propertyNames" in s:
                self.check(key, s["propertyNames"], f"{at}.{key} (name)", out)

    def check_combinators(
        self, v: Any, s: dict[str, Any], at: str, out: list[SchemaProblem]
    ) -> None:
        for sub in s.get("allOf", []):
            self.check(v, sub, at, out)
        if "anyOf" in s and not any(self.valid(v, sub, at) for sub in s["anyOf"]):
            out.append(SchemaProblem(at, "matches none of the allowed forms (anyOf)"))
        if "oneOf" in s:
            n = sum(self.valid(v, sub, at) for sub in s["oneOf"])
            if n != 1:
                out.append(
                    SchemaProblem(at, f"matches {n} of the forms where exactly one must (oneOf)")
                )
        if "not" in s and self.valid(v, s["not"], at):
            out.append(SchemaProblem(at, f"must not match {json.dumps(s['not'])[:200]}"))
        if "if" in s:
            branch = "then" if self.valid(v, s["if"], at) else "else"
            if branch in s:
                self.check(v, s[branch], at, out)


def _show(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 80 else text[:77] + "..."

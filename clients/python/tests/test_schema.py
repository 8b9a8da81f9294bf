"""The bundled schemas and the validator (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support import REPO

import warren
from warren import schema_check

BUNDLED = Path(warren.__file__).resolve().parent / "schema"
DOCS = REPO / "docs" / "schema"


def test_the_bundled_schemas_are_the_docs_schemas() -> None:
    docs = sorted(p.name for p in DOCS.glob("*.json"))
    bundled = sorted(p.name for p in BUNDLED.glob("*.json"))
    assert bundled == docs, "copy docs/schema/*.json into clients/python/src/warren/schema/"
    for name in docs:
        assert (BUNDLED / name).read_bytes() == (DOCS / name).read_bytes(), (
            f"{name} drifted from docs/schema: copy it again"
        )
    assert sorted(f"{n}.json" for n in schema_check.SCHEMAS) == docs


@pytest.mark.parametrize("name", schema_check.SCHEMAS)
def test_every_schema_uses_only_the_keywords_the_validator_knows(name: str) -> None:
    schema_check.load(name)  # raises UnsupportedSchema otherwise


def test_a_schema_with_an_unknown_keyword_is_refused() -> None:
    with pytest.raises(schema_check.UnsupportedSchema, match="dependentRequired"):
        schema_check._check_keywords({"dependentRequired": {}}, "x", "#")


REQUESTS: list[tuple[str, Any]] = [
    ("workflow-request", {"tasks": [{"id": "a", "type": "t"}]}),
    ("workflow-request", {"tasks": []}),
    ("workflow-request", {"tasks": [{"id": "a b", "type": ""}], "priority": 10}),
    ("workflow-request", {"tasks": [{"id": "a", "type": "t", "depends_on": ["x", "x"]}]}),
    ("workflow-request", {"id": "x" * 129, "tasks": [{"id": "a", "type": "t", "retry": {}}]}),
    ("workflow-request", {"tasks": [{"id": "a", "type": "t", "map": "${a.output}x"}]}),
    ("workflow-request", {"tasks": [{"id": "a", "type": "t", "run_if": "sometimes"}]}),
    ("workflow-request", {"tasks": [{"id": "a", "type": "t", "timeout_ms": 1.0}]}),
    ("workflow-request", {"tasks": [{"id": "a", "type": "t", "timeout_ms": True}]}),
    ("workflow-request", {"tasks": "a"}),
    ("workflow-request", {"tasks": [{"id": "a", "type": "t"}], "extra": 1}),
    ("control-request", {"control": "status", "workflow_id": "w"}),
    ("control-request", {"control": "status"}),
    ("control-request", {"control": "pause", "queue": "q", "type": "t"}),
    ("control-request", {"control": "pause"}),
    ("control-request", {"control": "pause", "queue": "q"}),
    ("control-request", {"control": "workers", "queue": "q"}),
    ("control-request", {"control": "schedule.get", "schedule_id": "s"}),
    ("control-request", {"control": "schedule.get", "schedule_id": "s", "limit": 3}),
    (
        "control-request",
        {
            "control": "schedule.create",
            "schedule": {
                "id": "s",
                "every_ms": 1000,
                "workflow": {"tasks": [{"id": "a", "type": "t"}]},
            },
        },
    ),
    (
        "control-request",
        {
            "control": "schedule.create",
            "schedule": {
                "id": "s",
                "cron": "* * * * *",
                "every_ms": 1000,
                "workflow": {"tasks": []},
            },
        },
    ),
    ("control-request", {"control": "rerun", "workflow_id": "w", "from": ["a"], "rerun_id": "r"}),
    ("control-request", {"control": "prune"}),
    ("control-request", {"control": "nope"}),
    (
        "task-result",
        {
            "workflow_id": "w",
            "task_id": "t",
            "attempt": 1,
            "token": "a" * 64,
            "status": "succeeded",
        },
    ),
    ("task-result", {"workflow_id": "w", "task_id": "t", "attempt": 1, "status": "failed"}),
]


@pytest.mark.parametrize(("name", "doc"), REQUESTS)
def test_the_validator_agrees_with_jsonschema(name: str, doc: Any) -> None:
    schema = json.loads((BUNDLED / f"{name}.json").read_text())
    expected = jsonschema.Draft202012Validator(schema).is_valid(doc)
    problems = schema_check.validate(doc, name)
    assert (not problems) == expected, problems


def test_the_builder_writes_the_json_request() -> None:
    wf = warren.Workflow("etl", input={"day": "2026-01-01"}, priority=5)
    a = wf.task("extract", type="etl.extract", input={"day": wf.input["day"]})
    b = wf.task(
        "load",
        type="etl.load",
        depends_on=[a],
        input={"rows": a.output["rows"]},
        retry=warren.RetryPolicy(3, backoff_ms=500),
        timeout_ms=30_000,
    )
    wf.task(
        "fan",
        type="etl.each",
        depends_on=[b],
        map=b.output["files"],
        input={
            "path": warren.item["path"],
            "n": warren.index,
            "label": f"file {warren.index} of {a.output['rows'][0]}",
        },
    )
    assert wf.to_dict() == {
        "name": "etl",
        "priority": 5,
        "input": {"day": "2026-01-01"},
        "tasks": [
            {"id": "extract", "type": "etl.extract", "input": {"day": "${workflow.input.day}"}},
            {
                "id": "load",
                "type": "etl.load",
                "depends_on": ["extract"],
                "input": {"rows": "${extract.output.rows}"},
                "retry": {"max_attempts": 3, "backoff_ms": 500},
                "timeout_ms": 30000,
            },
            {
                "id": "fan",
                "type": "etl.each",
                "depends_on": ["load"],
                "map": "${load.output.files}",
                "input": {
                    "path": "${item.path}",
                    "n": "${index}",
                    "label": "file ${index} of ${extract.output.rows.0}",
                },
            },
        ],
    }
    assert schema_check.validate(wf.to_dict(), "workflow-request") == []
    with pytest.raises(ValueError):
        wf.task("load", type="again")
    with pytest.raises(ValueError):
        a.output["a.b"]

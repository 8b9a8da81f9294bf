#!/usr/bin/env python3
"""Checks what Warren puts on the wire against docs/protocol.md and
docs/schema/*.json, as a client that never read Rust would see it.

Run by the integration test `polyglot::wire_matches_the_schemas` against a
scheduler and a Rust worker (queue `default`, built-in handlers) in the
namespace WARREN_NAMESPACE. This script is a producer, an observer of the
events exchange, and a worker of its own queue `wirecheck`; it also binds
spare queues to the tasks and results exchanges to see copies of the
messages exchanged with the Rust worker.

Every body is validated against its schema made strict: an object the
schema describes may carry no field the schema does not name, so a field
added on the wire but not to the documentation fails this check. Exits 0
when everything matches; otherwise prints each mismatch and exits 1.
"""
import copy
import datetime
import json
import os
import pathlib
import re
import sys
import time
import uuid

import jsonschema
import pika

URL = os.environ.get("AMQP_ADDR", "amqp://127.0.0.1:5672/%2f")
NS = os.environ["WARREN_NAMESPACE"]
SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema"
TIMEOUT = 30
problems = []


# The protocol version docs/protocol.md describes (header warren-protocol).
PROTOCOL = 2

def strict(schema):
    """The schema with additionalProperties: false wherever it lists
    properties and says nothing of others; but not in an `if`, which
    names one field to test, not the object's fields (made strict it
    would never hold, and its `then` would never be checked)."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for k, v in node.items():
                if k != "if":
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


formats = jsonschema.FormatChecker()


@formats.checks("date-time", raises=ValueError)
def _rfc3339(value):
    if not isinstance(value, str) or "T" not in value:
        raise ValueError(f"not an RFC 3339 date-time: {value!r}")
    datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


validators = {}
for path in sorted(SCHEMAS.glob("*.json")):
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validators[path.stem] = jsonschema.Draft202012Validator(strict(schema), format_checker=formats)
seen = {name: 0 for name in validators}


def check(kind, body, where):
    try:
        doc = json.loads(body) if isinstance(body, (bytes, str)) else body
    except ValueError as e:
        problems.append(f"{where}: body is not JSON: {e}")
        return None
    for err in validators[kind].iter_errors(doc):
        path = "/".join(map(str, err.absolute_path)) or "(root)"
        problems.append(f"{where}: {kind} schema: at {path}: {err.message}")
    seen[kind] += 1
    return doc


def check_props(props, kind, where, message_id=None, priority=None):
    expect = {"content_type": "application/json", "delivery_mode": 2, "type": kind}
    for field, want in expect.items():
        got = getattr(props, field)
        if got != want:
            problems.append(f"{where}: property {field} is {got!r}, protocol says {want!r}")
    version = (props.headers or {}).get("warren-protocol")
    if version != PROTOCOL:
        problems.append(f"{where}: header warren-protocol is {version!r}, protocol says {PROTOCOL}")
    if message_id is not None and props.message_id != message_id:
        problems.append(f"{where}: message_id is {props.message_id!r}, protocol says {message_id!r}")
    if priority is not None and props.priority != priority:
        problems.append(f"{where}: priority is {props.priority!r}, protocol says {priority!r}")


result_stash = {}


def next_result(next_message, queue, what):
    """The next result copied to `queue`, as (props, body, batched): a
    message of several results (warren.results, a JSON array) is checked
    whole, then handed out one result at a time."""
    pending = result_stash.setdefault(queue, [])
    if not pending:
        _, props, body = next_message(queue, what)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, list):
            check("task-results", doc, f"{what} (a message of {len(doc)} results)")
            check_props(props, "warren.results", f"{what} (a message of results)")
            pending.extend((props, json.dumps(r).encode(), True) for r in doc)
        else:
            pending.append((props, body, False))
    return pending.pop(0)


def epoch_ms(text):
    """Milliseconds since the epoch of an RFC 3339 time (any number of
    fractional digits), or None."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text or "")
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    whole = datetime.datetime.fromisoformat(m.group(1) + zone)
    return int(whole.timestamp()) * 1000 + int((m.group(2) or "0")[:3].ljust(3, "0"))


def check_schedules(ch, publish_request, next_message, next_reply):
    """A schedule's life through the control requests, as a foreign client
    sees it: create (every_ms 1000), its firing on {ns}.workflows, get,
    list (paged), pause, trigger, delete; and a refused create and a
    malformed request."""
    sid = "wire-sched-" + uuid.uuid4().hex[:8]
    # Copies of what reaches the requests queue with key "": the firings
    # (the schedule requests themselves go with key "control").
    firings = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(firings, f"{NS}.workflows", routing_key="")
    workflow = {
        "name": "wire schedule",
        "input": {"schedule": "${schedule.id}", "at": "${schedule.fire_time}"},
        "tasks": [{"id": "e", "type": "echo",
                   "input": {"note": "fired ${schedule.fire_time} by ${schedule.id}"}}],
    }

    def ask(req, corr, kind="schedule-report", typ="warren.schedule"):
        check("control-request", req, f"our {corr} request")
        publish_request(req, corr, "control")
        _, props, body = next_reply(corr, f"{corr} reply")
        answer = check(kind, body, f"{corr} reply")
        check_props(props, typ, f"{corr} reply")
        return answer or {}

    created = ask({"control": "schedule.create",
                   "schedule": {"id": sid, "every_ms": 1000, "overlap": "allow",
                                "catch_up": "none", "workflow": workflow}}, "schedule-create")
    shown = created.get("schedule") or {}
    if (created.get("outcome") != "created" or created.get("schedule_id") != sid
            or shown.get("workflow") != workflow or shown.get("timezone") != "UTC"
            or not shown.get("next_fire_at") or shown.get("paused") is not False):
        problems.append(f"schedule create: {created}")
    anchor = epoch_ms(shown.get("created_at"))

    # The first firing: a workflow request as a producer publishes one.
    while True:
        _, props, body = next_message(firings, "a schedule firing")
        request = json.loads(body)
        if str(request.get("id", "")).startswith(sid + ":"):
            break
    check("workflow-request", request, "schedule firing")
    wid = request["id"]
    fired_at = epoch_ms(wid[len(sid) + 1:])
    if (props.content_type != "application/json" or props.delivery_mode != 2
            or (props.headers or {}).get("warren-protocol") != PROTOCOL
            or props.message_id != wid or props.type is not None or props.reply_to is not None):
        problems.append(f"schedule firing: properties {props}")
    at = request.get("input", {}).get("at", "")
    if (request.get("input", {}).get("schedule") != sid or epoch_ms(at) != fired_at
            or not re.fullmatch(r".*T\d\d:\d\d:\d\d\.\d{3}Z", at)
            or request["tasks"][0].get("input") != {"note": f"fired {at} by {sid}"}):
        problems.append(f"schedule firing: placeholders not filled in as documented: {request}")
    if anchor is None or fired_at is None or fired_at <= anchor or (fired_at - anchor) % 1000:
        problems.append(f"schedule firing: {wid} is not created_at + k * every_ms "
                        f"(created_at {shown.get('created_at')})")
    ch.queue_delete(firings)

    got = ask({"control": "schedule.get", "schedule_id": sid}, "schedule-get")
    info = got.get("schedule") or {}
    if (got.get("outcome") != "found" or info.get("workflow") != workflow
            or info.get("fired", 0) < 1 or not info.get("last_workflow_id")):
        problems.append(f"schedule get: {got}")
    page = ask({"control": "schedule.list", "limit": 1}, "schedule-list",
               "schedules-page", "warren.schedules")
    if [s.get("id") for s in page.get("schedules", [])] != [sid] or page.get("next_after") != sid:
        problems.append(f"schedule list (limit 1): {page}")
    page = ask({"control": "schedule.list", "after": sid}, "schedule-list-after",
               "schedules-page", "warren.schedules")
    if page.get("schedules") != [] or "next_after" in page:
        problems.append(f"schedule list after the last: {page}")
    paused = ask({"control": "schedule.pause", "schedule_id": sid}, "schedule-pause")
    if paused.get("outcome") != "paused" or "next_fire_at" in (paused.get("schedule") or {}):
        problems.append(f"schedule pause: {paused}")
    triggered = ask({"control": "schedule.trigger", "schedule_id": sid}, "schedule-trigger")
    if (triggered.get("outcome") != "triggered"
            or not str(triggered.get("workflow_id", "")).startswith(sid + ":")):
        problems.append(f"schedule trigger: {triggered}")
    deleted = ask({"control": "schedule.delete", "schedule_id": sid}, "schedule-delete")
    if deleted.get("outcome") != "deleted" or (deleted.get("schedule") or {}).get("id") != sid:
        problems.append(f"schedule delete: {deleted}")
    gone = ask({"control": "schedule.get", "schedule_id": sid}, "schedule-get-deleted")
    if gone.get("outcome") != "not_found" or "schedule" in gone:
        problems.append(f"schedule get after delete: {gone}")

    # A refused create lists every problem, each with its documented code.
    refused = ask({"control": "schedule.create",
                   "schedule": {"id": sid + "-bad", "cron": "0 25 * * *",
                                "timezone": "Mars/Olympus", "workflow": workflow}},
                  "schedule-create-bad")
    codes = [e.get("code") for e in refused.get("errors", [])]
    if refused.get("outcome") != "rejected" or codes != ["invalid_cron", "unknown_timezone"]:
        problems.append(f"refused schedule create: {refused}")
    documented = (SCHEMAS.parent / "protocol.md").read_text()
    for code in codes:
        if f"`{code}`" not in documented:
            problems.append(f"refused schedule create: code {code} is not in docs/protocol.md")
    # A malformed request: refused by the schema as written, and answered
    # with a rejected workflow report.
    malformed = {"control": "schedule.get"}
    as_written = json.loads((SCHEMAS / "control-request.json").read_text())
    if jsonschema.Draft202012Validator(as_written).is_valid(malformed):
        problems.append("control-request schema: a schedule.get without schedule_id passes")
    publish_request(malformed, "schedule-malformed", "control")
    _, props, body = next_reply("schedule-malformed", "reply to a malformed schedule request")
    rejected = check("workflow-report", body, "reply to a malformed schedule request")
    check_props(props, "warren.report", "reply to a malformed schedule request")
    codes = [e.get("code") for e in (rejected or {}).get("errors", [])]
    if (rejected or {}).get("status") != "rejected" or codes != ["invalid_control"]:
        problems.append(f"reply to a malformed schedule request: {rejected}")


def check_rules(wf, publish_request, next_reply):
    """Conditions and trigger rules, run by the Rust worker's built-ins: a
    `when` that is false, a failure compensated (`run_if: any_failed`,
    `on_failure: handled`), cleanup (`run_if: all_done`); every skip
    reason on the wire, each documented. And a request refused for a bad
    condition and a compensation without dependencies."""
    rid = wf + "-rules"
    request = {
        "id": rid, "on_failure": "handled", "input": {"limit": 1000},
        "tasks": [
            {"id": "check", "type": "echo", "input": {"approved": False, "amount": 250}},
            {"id": "approve", "type": "echo", "depends_on": ["check"],
             "when": "${check.output.approved} && ${check.output.amount} <= ${workflow.input.limit}"},
            {"id": "after_approve", "type": "echo", "depends_on": ["approve"]},
            {"id": "undo_check", "type": "echo", "depends_on": ["check"], "run_if": "any_failed"},
            {"id": "ship", "type": "fail", "depends_on": ["check"],
             "input": {"retryable": False, "message": "no carrier"}},
            {"id": "confirm", "type": "echo", "depends_on": ["ship"]},
            {"id": "refund", "type": "echo", "depends_on": ["ship"], "run_if": "any_failed",
             "input": {"amount": "${check.output.amount}"}},
            {"id": "close", "type": "echo", "depends_on": ["approve", "confirm", "refund"],
             "run_if": "all_done"},
        ],
    }
    check("workflow-request", request, "our rules request")
    publish_request(request, "rules")
    _, props, body = next_reply("rules", "outcome of the rules workflow")
    report = check("workflow-report", body, "outcome of the rules workflow") or {}
    check_props(props, "warren.report", "outcome of the rules workflow")
    tasks = report.get("tasks", {})
    got = {k: (v.get("state"), v.get("skip_reason")) for k, v in tasks.items()}
    want = {
        "check": ("succeeded", None),
        "approve": ("skipped", "condition"),
        "after_approve": ("skipped", "upstream_skipped"),
        "undo_check": ("skipped", "trigger_rule"),
        "ship": ("failed", None),
        "confirm": ("skipped", "workflow_failed"),
        "refund": ("succeeded", None),
        "close": ("succeeded", None),
    }
    if report.get("status") != "succeeded" or "error" in report or got != want:
        problems.append(f"rules outcome: expected succeeded (on_failure: handled) with "
                        f"{want}, got {report.get('status')} with {got}: {report}")
    if tasks.get("refund", {}).get("output") != {"amount": 250}:
        problems.append(f"rules outcome: refund's output: {tasks.get('refund')}")
    documented = (SCHEMAS.parent / "protocol.md").read_text()
    for reason in sorted({r for _, r in want.values() if r}):
        if f"`{reason}`" not in documented:
            problems.append(f"rules outcome: skip_reason {reason} is not in docs/protocol.md")

    bad = {"id": rid + "-bad", "tasks": [
        {"id": "x", "type": "echo", "run_if": "any_failed"},
        {"id": "y", "type": "echo", "depends_on": ["x"], "when": "${x.output.n} < 1 <"},
    ]}
    check("workflow-request", bad, "our bad rules request")
    publish_request(bad, "rules-bad")
    _, props, body = next_reply("rules-bad", "rejection of the bad rules request")
    rejected = check("workflow-report", body, "rejection of the bad rules request") or {}
    check_props(props, "warren.report", "rejection of the bad rules request")
    codes = sorted(e.get("code") for e in rejected.get("errors", []))
    if rejected.get("status") != "rejected" or codes != ["invalid_condition", "invalid_run_if"]:
        problems.append(f"bad rules request: codes {codes}, expected invalid_condition "
                        f"and invalid_run_if: {rejected}")
    for code in codes:
        if f"`{code}`" not in documented:
            problems.append(f"bad rules request: code {code} is not in docs/protocol.md")


def check_rerun(wf, publish_request, next_reply):
    """A failed workflow re-run from its failed task: the rerun's outcome
    (run 2, the task's history), the submitter's second outcome, an
    idempotent repeat by rerun_id, and a refusal with its documented
    code."""
    rid = wf + "-rerun"
    request = {"id": rid, "tasks": [
        {"id": "first", "type": "echo", "input": 1},
        {"id": "flaky", "type": "fail", "depends_on": ["first"],
         "input": {"retryable": False, "message": "still down"}},
        {"id": "after", "type": "echo", "depends_on": ["flaky"]},
    ]}
    check("workflow-request", request, "our rerun workflow")
    publish_request(request, "rerun-sub")
    _, _, body = next_reply("rerun-sub", "first outcome of the rerun workflow")
    first = check("workflow-report", body, "first outcome of the rerun workflow") or {}
    if first.get("status") != "failed":
        problems.append(f"rerun workflow: expected failed, got {first}")
    rerun = {"control": "rerun", "workflow_id": rid, "from": ["flaky"], "rerun_id": "r-1"}
    check("control-request", rerun, "our rerun request")
    publish_request(rerun, "rerun", "control")
    _, props, body = next_reply("rerun", "outcome of the rerun")
    second = check("workflow-report", body, "outcome of the rerun") or {}
    check_props(props, "warren.report", "outcome of the rerun")
    history = second.get("tasks", {}).get("flaky", {}).get("history", [])
    if (second.get("run") != 2 or second.get("status") != "failed"
            or [h.get("state") for h in history] != ["failed"]
            or second.get("tasks", {}).get("first", {}).get("history")
            or [r.get("run") for r in second.get("runs", [])] != [1, 2]):
        problems.append(f"rerun outcome: expected run 2 failed, flaky's history "
                        f"[failed], first without history, runs [1, 2]: {second}")
    # The submitter hears of the second run too.
    _, _, body = next_reply("rerun-sub", "the submitter's second outcome")
    again = check("workflow-report", body, "the submitter's second outcome") or {}
    if again.get("run") != 2:
        problems.append(f"submitter's second outcome: expected run 2: {again}")
    # The same rerun_id again: answered with the report, no new run.
    publish_request(rerun, "rerun-again", "control")
    _, _, body = next_reply("rerun-again", "answer to the repeated rerun")
    same = check("workflow-report", body, "answer to the repeated rerun") or {}
    if same.get("run") != 2:
        problems.append(f"repeated rerun: expected the run it started (2): {same}")
    # A prune of what ended a year ago or more: nothing here; its answer.
    prune = {"control": "prune", "older_than_ms": 365 * 86_400_000}
    check("control-request", prune, "our prune request")
    publish_request(prune, "prune", "control")
    _, props, body = next_reply("prune", "answer to the prune")
    pruned = check("prune-report", body, "answer to the prune") or {}
    check_props(props, "warren.pruned", "answer to the prune")
    if pruned.get("pruned") != 0 or pruned.get("more") is not False:
        problems.append(f"prune: expected nothing pruned: {pruned}")
    bad = {"control": "rerun", "workflow_id": rid, "from": ["ghost"]}
    check("control-request", bad, "our refused rerun")
    publish_request(bad, "rerun-bad", "control")
    _, _, body = next_reply("rerun-bad", "refusal of the rerun")
    refused = check("workflow-report", body, "refusal of the rerun") or {}
    codes = [e.get("code") for e in refused.get("errors", [])]
    if refused.get("status") != "rejected" or codes != ["unknown_task"]:
        problems.append(f"refused rerun: expected rejected with unknown_task: {refused}")
    documented = (SCHEMAS.parent / "protocol.md").read_text()
    for code in codes:
        if f"`{code}`" not in documented:
            problems.append(f"refused rerun: code {code} is not in docs/protocol.md")


def check_map(ch, wf, own, publish_request, next_message, next_reply):
    """Mapped tasks, as a foreign client sees them: list -> map -> reduce,
    the instances `each[k]` served by this script (their task messages,
    results echoing the bracketed task_id, a status answer and a progress
    event while the map runs), the outputs collected in order, an empty
    map, a map over a value that is not an array, and a request refused
    with invalid_map."""
    mid = wf + "-map"
    documented = (SCHEMAS.parent / "protocol.md").read_text()
    # Copies of this workflow's task messages to `default`, its results,
    # and its events.
    spies = {}
    for name, exchange, key in [("tasks", f"{NS}.tasks", "default"),
                                ("results", f"{NS}.results", ""),
                                ("events", f"{NS}.events", f"workflow.{mid}.*")]:
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, exchange, routing_key=key)
        spies[name] = q
    files = [{"path": "a.png"}, {"path": "b.png"}, {"path": "c.png"}]
    request = {
        "id": mid, "priority": 2, "input": {"files": files, "none": []},
        "tasks": [
            {"id": "list", "type": "echo", "input": {"files": "${workflow.input.files}"}},
            {"id": "each", "type": "py.each", "queue": "wirecheck", "depends_on": ["list"],
             "map": "${list.output.files}", "timeout_ms": 60000,
             "input": {"path": "${item.path}", "n": "${index}", "label": "${index}: ${item.path}"}},
            {"id": "none", "type": "echo", "map": "${workflow.input.none}", "input": "${item}"},
            {"id": "reduce", "type": "echo", "depends_on": ["each", "none"],
             "input": {"all": "${each.output}", "none": "${none.output}"}},
        ],
    }
    check("workflow-request", request, "our map request")
    publish_request(request, "map")

    # The instances reach this worker, each a task of its own.
    instances = {}
    for _ in files:
        _, props, body = next_message(own, "task message of an instance")
        t = check("task-message", body, "task message of an instance") or {}
        tid = t.get("task_id")
        check_props(props, "warren.task", f"task message {tid}", f"{mid}/{tid}/1", 2)
        instances[tid] = (t, props)
    want_ids = [f"each[{k}]" for k in range(len(files))]
    if sorted(instances) != want_ids:
        problems.append(f"map: instances {sorted(instances)}, expected {want_ids}")
    for k, f in enumerate(files):
        t = instances.get(f"each[{k}]", ({}, None))[0]
        want = {"path": f["path"], "n": k, "label": f"{k}: {f['path']}"}
        if t and (t.get("input") != want or t.get("type") != "py.each"):
            problems.append(f"map: instance each[{k}]: input {t.get('input')}, expected {want}")

    # While they run: the mapped task is `mapped`, in a status answer and
    # in a progress event.
    status = {"control": "status", "workflow_id": mid}
    check("control-request", status, "our map status request")
    publish_request(status, "map-status", "control")
    _, props, body = next_reply("map-status", "status of the running map")
    running = check("workflow-report", body, "status of the running map") or {}
    states = {k: v.get("state") for k, v in running.get("tasks", {}).items()}
    want_states = {"list": "succeeded", "none": "succeeded", "each": "mapped", "reduce": "pending",
                   "each[0]": "running", "each[1]": "running", "each[2]": "running"}
    if running.get("status") != "running" or states != want_states:
        problems.append(f"map: status while running: {states}, expected {want_states}")
    if running.get("tasks", {}).get("none", {}).get("output") != []:
        problems.append(f"map: an empty map's output is not []: {running.get('tasks', {}).get('none')}")
    one = {"control": "status", "workflow_id": mid, "task_id": "each[1]"}
    check("control-request", one, "our status request of an instance")
    publish_request(one, "map-status-one", "control")
    _, props, body = next_reply("map-status-one", "status of an instance")
    answer = check("workflow-report", body, "status of an instance") or {}
    if list(answer.get("tasks", {})) != ["each[1]"]:
        problems.append(f"map: status of each[1]: {answer}")
    while True:  # progress comes about a second after the instances start
        method, props, body = next_message(spies["events"], "progress of the map")
        if props.type == "warren.progress":
            progress = check("workflow-progress", body, f"event {method.routing_key}") or {}
            check_props(props, "warren.progress", f"event {method.routing_key}")
            break
        check("workflow-report", body, f"event {method.routing_key}")
    want = {"succeeded": 2, "mapped": 1, "running": 3, "pending": 1}
    if progress.get("tasks") != want or progress.get("total") != 7:
        problems.append(f"map: progress {progress}, expected total 7 and {want}")

    # Answered last first: the collected output keeps the elements' order.
    # The last instance's result goes alone, the other two together in one
    # message of results (warren.results), as a busy worker sends them.
    outputs = [{"thumb": f["path"].upper()} for f in files]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    ours = []
    for k in reversed(range(len(files))):
        t, _ = instances.get(f"each[{k}]", ({}, None))
        result = {"workflow_id": mid, "task_id": t.get("task_id", f"each[{k}]"),
                  "attempt": 1, "token": t.get("token", ""), "status": "succeeded",
                  "output": outputs[k], "worker": "wire-check",
                  "started_at": now, "finished_at": now}
        check("task-result", result, f"our result of each[{k}]")
        ours.append((k, result))
    (last, alone), together = ours[0], [r for _, r in ours[1:]]
    ch.basic_publish(f"{NS}.results", "", json.dumps(alone).encode(),
                     pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                          type="warren.result",
                                          message_id=f"{mid}/each[{last}]/1",
                                          headers={"warren-protocol": PROTOCOL}),
                     mandatory=True)
    check("task-results", together, "our message of two results")
    ch.basic_publish(f"{NS}.results", "", json.dumps(together).encode(),
                     pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                          type="warren.results",
                                          headers={"warren-protocol": PROTOCOL}),
                     mandatory=True)

    _, props, body = next_reply("map", "outcome of the map workflow")
    report = check("workflow-report", body, "outcome of the map workflow") or {}
    check_props(props, "warren.report", "outcome of the map workflow")
    tasks = report.get("tasks", {})
    if report.get("status") != "succeeded" or sorted(tasks) != sorted(want_states):
        problems.append(f"map outcome: {report}")
    mapped = tasks.get("each", {})
    if (mapped.get("state") != "succeeded" or mapped.get("output") != outputs
            or mapped.get("attempts") != 0 or mapped.get("depends_on") != ["list"]):
        problems.append(f"map outcome: the mapped task: {mapped}")
    for k in range(len(files)):
        inst = tasks.get(f"each[{k}]", {})
        if (inst.get("state") != "succeeded" or inst.get("output") != outputs[k]
                or inst.get("attempts") != 1 or "depends_on" in inst
                or inst.get("worker") != "wire-check"):
            problems.append(f"map outcome: instance each[{k}]: {inst}")
    if tasks.get("reduce", {}).get("output") != {"all": outputs, "none": []}:
        problems.append(f"map outcome: reduce's output: {tasks.get('reduce')}")

    # Copies of the rest: task messages list and reduce (the empty map
    # has no instance), the five results.
    seen_tasks, seen_results = set(), set()
    while seen_tasks != {"list", "reduce"}:
        _, props, body = next_message(spies["tasks"], "task message copy of the map workflow")
        t = check("task-message", body, "task message copy") or {}
        if t.get("workflow_id") == mid:
            check_props(props, "warren.task", f"task message {t.get('task_id')}",
                        f"{mid}/{t.get('task_id')}/1", 2)
            seen_tasks.add(t.get("task_id"))
    while seen_results != {"list", "reduce", *want_ids}:
        props, body, _ = next_result(next_message, spies["results"], "result copy of the map workflow")
        r = check("task-result", body, "result copy") or {}
        if r.get("workflow_id") == mid:
            seen_results.add(r.get("task_id"))
    for q in spies.values():
        ch.queue_delete(q)

    # A map over a value that is not an array fails the mapped task, not
    # retried, before any instance.
    flat = {"id": mid + "-flat", "input": {"n": 3},
            "tasks": [{"id": "m", "type": "echo", "map": "${workflow.input.n}", "input": "${item}",
                       "retry": {"max_attempts": 3}}]}
    check("workflow-request", flat, "our map over a number")
    publish_request(flat, "map-flat")
    _, props, body = next_reply("map-flat", "outcome of a map over a number")
    failed = check("workflow-report", body, "outcome of a map over a number") or {}
    m = failed.get("tasks", {}).get("m", {})
    error = m.get("error") or {}
    if (failed.get("status") != "failed" or list(failed.get("tasks", {})) != ["m"]
            or m.get("state") != "failed" or m.get("attempts") != 0
            or "map_not_array" not in error.get("message", "") or error.get("retryable")):
        problems.append(f"map over a number: {failed}")
    if "map_not_array" not in documented:
        problems.append("map over a number: map_not_array is not in docs/protocol.md")

    # Refused: ${index} outside a mapped task, a map that is not one
    # template (which the schema, as written, refuses too).
    bad = {"id": mid + "-bad", "tasks": [
        {"id": "x", "type": "echo", "input": {"i": "${index}"}},
        {"id": "y", "type": "echo", "depends_on": ["x"], "map": "list: ${x.output}"},
    ]}
    as_written = json.loads((SCHEMAS / "workflow-request.json").read_text())
    if jsonschema.Draft202012Validator(as_written).is_valid(bad):
        problems.append("workflow-request schema: a map that is not one template passes")
    publish_request(bad, "map-bad")
    _, props, body = next_reply("map-bad", "rejection of the bad map request")
    rejected = check("workflow-report", body, "rejection of the bad map request") or {}
    check_props(props, "warren.report", "rejection of the bad map request")
    errors = sorted((e.get("code"), e.get("task")) for e in rejected.get("errors", []))
    if rejected.get("status") != "rejected" or errors != [("invalid_map", "x"), ("invalid_map", "y")]:
        problems.append(f"bad map request: {errors}, expected invalid_map for x and y: {rejected}")
    if "`invalid_map`" not in documented:
        problems.append("bad map request: code invalid_map is not in docs/protocol.md")


def main():
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.confirm_delivery()
    # What this client declares, as the protocol says a client may.
    own = f"{NS}.tasks.wirecheck"
    ch.exchange_declare(f"{NS}.tasks", "direct", durable=True)
    ch.queue_declare(own, durable=True, arguments={"x-max-priority": 10})
    ch.queue_bind(own, f"{NS}.tasks", routing_key="wirecheck")
    # Copies of what the scheduler and the Rust worker exchange, and events.
    spy = {}
    for name, exchange, key in [
        ("tasks", f"{NS}.tasks", "default"),
        ("results", f"{NS}.results", ""),
        ("events", f"{NS}.events", "workflow.#"),
        ("control", f"{NS}.control", ""),
        ("heartbeats", f"{NS}.events", "worker.*.heartbeat"),
    ]:
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, exchange, routing_key=key)
        spy[name] = q
    replies = ch.queue_declare("", exclusive=True).method.queue

    def publish_request(body, corr, key=""):
        ch.basic_publish(
            f"{NS}.workflows", key, json.dumps(body).encode(),
            pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                 reply_to=replies, correlation_id=corr),
            mandatory=True,
        )

    def next_message(queue, what):
        for method, props, body in ch.consume(queue, inactivity_timeout=TIMEOUT):
            ch.cancel()
            if method is None:
                raise SystemExit(f"wire_check: no {what} within {TIMEOUT} s")
            ch.basic_ack(method.delivery_tag)
            return method, props, body
        raise SystemExit(f"wire_check: consumer of {what} ended")

    stash = {}

    def next_reply(corr, what):
        """The reply to request `corr`; other replies (outcomes of earlier
        submissions) are checked as reports on the way, and kept for a
        later ask."""
        if stash.get(corr):
            return stash[corr].pop(0)
        while True:
            method, props, body = next_message(replies, what)
            if props.correlation_id == corr:
                return method, props, body
            check("workflow-report", body, f"reply to {props.correlation_id}")
            check_props(props, "warren.report", f"reply to {props.correlation_id}")
            stash.setdefault(props.correlation_id, []).append((method, props, body))

    wf = "wire-" + uuid.uuid4().hex[:8]
    request = {
        "id": wf, "name": "wire check", "priority": 3, "input": {"n": 7},
        "tasks": [
            {"id": "a", "type": "echo", "input": {"n": "${workflow.input.n}"}},
            {"id": "b", "type": "py.check", "queue": "wirecheck", "depends_on": ["a"],
             "input": {"from_a": "${a.output.n}"}, "timeout_ms": 60000,
             "retry": {"max_attempts": 2, "backoff_ms": 10, "max_backoff_ms": 100}},
            {"id": "c", "type": "echo", "depends_on": ["b"], "input": "${b.output}"},
        ],
    }
    check("workflow-request", request, "our request")
    publish_request(request, "run")

    # Task b reaches this worker: a task message as any worker sees it.
    _, props, body = next_message(own, "task message for b")
    task = check("task-message", body, "task message b")
    check_props(props, "warren.task", "task message b", f"{wf}/b/1", 3)
    if task and (task.get("input") != {"from_a": 7} or task.get("max_attempts") != 2):
        problems.append(f"task message b: input or max_attempts not as requested: {task}")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    if task and not task.get("token"):
        problems.append(f"task message b: no token: {task}")
    # The result carries the attempt's token back, or it is not applied.
    result = {"workflow_id": wf, "task_id": "b", "attempt": 1, "status": "succeeded",
              "token": (task or {}).get("token", ""),
              "output": {"checked": True}, "worker": "wire-check",
              "started_at": now, "finished_at": now}
    check("task-result", result, "our result")
    ch.basic_publish(f"{NS}.results", "", json.dumps(result).encode(),
                     pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                          type="warren.result", message_id=f"{wf}/b/1",
                                          headers={"warren-protocol": PROTOCOL}),
                     mandatory=True)

    # The outcome, RPC style.
    _, props, body = next_reply("run", "outcome")
    report = check("workflow-report", body, "outcome")
    check_props(props, "warren.report", "outcome")
    if props.correlation_id != "run":
        problems.append(f"outcome: correlation_id {props.correlation_id!r}, sent 'run'")
    if report and report.get("status") != "succeeded":
        problems.append(f"outcome: workflow did not succeed: {report}")

    # A status request, and its answer.
    status = {"control": "status", "workflow_id": wf}
    check("control-request", status, "our status request")
    publish_request(status, "status")
    _, props, body = next_reply("status", "status reply")
    check("workflow-report", body, "status reply")
    check_props(props, "warren.report", "status reply")

    # A rejected request: every problem, each with its documented code.
    bad = {"id": wf + "-bad", "tasks": [
        {"id": "x", "type": "echo", "depends_on": ["y"]},
        {"id": "y", "type": "echo", "depends_on": ["x", "ghost"]},
    ]}
    publish_request(bad, "bad")
    _, props, body = next_reply("bad", "rejection")
    rejected = check("workflow-report", body, "rejection")
    check_props(props, "warren.report", "rejection")
    codes = sorted(e.get("code") for e in (rejected or {}).get("errors", []))
    if codes != ["cycle", "unknown_dependency"]:
        problems.append(f"rejection: codes {codes}, expected cycle and unknown_dependency")
    documented = (SCHEMAS.parent / "protocol.md").read_text()
    for code in codes:
        if f"`{code}`" not in documented:
            problems.append(f"rejection: code {code} is not in docs/protocol.md")

    # Copies of the Rust side: task messages a and c, results a, b and c.
    for i in range(2):
        _, props, body = next_message(spy["tasks"], "task message copy")
        t = check("task-message", body, f"task message copy {i}")
        if t:
            check_props(props, "warren.task", f"task message {t.get('task_id')}",
                        f"{wf}/{t.get('task_id')}/1", 3)
    for i in range(3):
        props, body, batched = next_result(next_message, spy["results"], "result copy")
        r = check("task-result", body, f"result copy {i}")
        if r and not batched:
            check_props(props, "warren.result", f"result {r.get('task_id')}",
                        f"{wf}/{r.get('task_id')}/1")
    # A workflow held running on this worker: its progress event, then a
    # cancel, its reply, the notice to workers and the cancelled event.
    held = wf + "-held"
    publish_request({"id": held, "tasks": [
        {"id": "hold", "type": "py.hold", "queue": "wirecheck"},
        {"id": "next", "type": "echo", "depends_on": ["hold"]},
    ]}, "held")
    _, props, body = next_message(own, "task message for hold")
    check("task-message", body, "task message hold")
    keys = set()

    def take_event():
        """Checks the next event; returns the body of a progress event."""
        method, props, body = next_message(spy["events"], "event")
        key = method.routing_key
        if props.type == "warren.progress":
            p = check("workflow-progress", body, f"event {key}")
            check_props(props, "warren.progress", f"event {key}")
            if p and key != f"workflow.{p.get('workflow_id')}.progress":
                problems.append(f"event: routing key {key} does not match its body")
            return p or {}
        e = check("workflow-report", body, f"event {key}")
        check_props(props, "warren.report", f"event {key}")
        if e and key != f"workflow.{e.get('workflow_id')}.{e.get('status')}":
            problems.append(f"event: routing key {key} does not match its body")
        keys.add(key)
        return None

    progress = None
    while progress is None:  # progress comes about a second after dispatch
        progress = take_event()
    if progress.get("workflow_id") != held or progress.get("tasks") != {"running": 1, "pending": 1}:
        problems.append(f"progress: unexpected {progress}")
    cancel = {"control": "cancel", "workflow_id": held}
    check("control-request", cancel, "our cancel request")
    publish_request(cancel, "cancel")
    _, props, body = next_reply("cancel", "cancel reply")
    cancelled = check("workflow-report", body, "cancel reply")
    check_props(props, "warren.report", "cancel reply")
    states = {k: v.get("state") for k, v in (cancelled or {}).get("tasks", {}).items()}
    if (cancelled or {}).get("status") != "cancelled" or states != {"hold": "cancelled", "next": "cancelled"}:
        problems.append(f"cancel reply: {cancelled}")
    if (cancelled or {}).get("tasks", {}).get("next", {}).get("depends_on") != ["hold"]:
        problems.append(f"cancel reply: depends_on missing: {cancelled}")
    _, props, body = next_message(spy["control"], "control notice")
    notice = check("control-notice", body, "control notice")
    check_props(props, "warren.control", "control notice")
    if notice != {"control": "cancel", "workflow_id": held}:
        problems.append(f"control notice: {notice}")
    # The rest of the events: every kind the protocol names, keyed right.
    want = {f"workflow.{wf}.running", f"workflow.{wf}.succeeded", f"workflow.{wf}-bad.rejected",
            f"workflow.{held}.running", f"workflow.{held}.cancelled"}
    while not want <= keys:
        take_event()
    if keys != want:
        problems.append(f"events: got {sorted(keys)}, expected {sorted(want)}")

    # A worker's heartbeat, and the scheduler's registry of workers.
    method, props, body = next_message(spy["heartbeats"], "heartbeat")
    beat = check("worker-heartbeat", body, "heartbeat")
    check_props(props, "warren.heartbeat", "heartbeat")
    if beat and method.routing_key != f"worker.{beat.get('worker_id')}.heartbeat":
        problems.append(f"heartbeat: routing key {method.routing_key} does not match its body")
    workers_request = {"control": "workers"}
    check("control-request", workers_request, "our workers request")
    deadline = time.monotonic() + TIMEOUT
    while True:  # the registry lists a worker once a heartbeat reached it
        publish_request(workers_request, "workers")
        _, props, body = next_reply("workers", "workers reply")
        registry = check("workers-report", body, "workers reply")
        check_props(props, "warren.workers", "workers reply")
        listed = {w.get("worker_id"): w.get("state") for w in (registry or {}).get("workers", [])}
        if listed.get("rust-1") == "running":
            break
        if time.monotonic() > deadline:
            problems.append(f"workers reply: rust-1 not running in {listed}")
            break
        time.sleep(0.1)

    # Pausing a task queue and resuming it: each answer says what is
    # paused. A pause naming both a queue and a type is refused by the
    # schema (as written, not made strict) and by the scheduler.
    for control, corr, want in [("pause", "pause", ["wirecheck-paused"]),
                                ("pause", "pause-again", ["wirecheck-paused"]),
                                ("resume", "resume", [])]:
        req = {"control": control, "queue": "wirecheck-paused"}
        check("control-request", req, f"our {corr} request")
        publish_request(req, corr)
        _, props, body = next_reply(corr, f"{corr} reply")
        answer = check("pauses-report", body, f"{corr} reply")
        check_props(props, "warren.pauses", f"{corr} reply")
        queues = [q.get("name") for q in (answer or {}).get("paused", {}).get("queues", [])]
        if queues != want or (answer or {}).get("errors"):
            problems.append(f"{corr} reply: paused queues {queues}, expected {want}: {answer}")
    both = {"control": "pause", "queue": "q", "type": "t"}
    as_written = json.loads((SCHEMAS / "control-request.json").read_text())
    if jsonschema.Draft202012Validator(as_written).is_valid(both):
        problems.append("control-request schema: a pause of both a queue and a type passes")
    publish_request(both, "both")
    _, props, body = next_reply("both", "reply to a pause of both")
    refused = check("workflow-report", body, "reply to a pause of both")
    check_props(props, "warren.report", "reply to a pause of both")
    codes = [e.get("code") for e in (refused or {}).get("errors", [])]
    if (refused or {}).get("status") != "rejected" or codes != ["invalid_control"]:
        problems.append(f"reply to a pause of both: {refused}")

    check_rules(wf, publish_request, next_reply)
    check_rerun(wf, publish_request, next_reply)
    check_map(ch, wf, own, publish_request, next_message, next_reply)
    check_schedules(ch, publish_request, next_message, next_reply)

    ch.queue_delete(own)
    conn.close()
    for kind, n in seen.items():
        if n == 0:
            problems.append(f"docs/schema/{kind}.json: no message of this kind was checked")
    for p in problems:
        print(p, file=sys.stderr)
    counts = ", ".join(f"{n} {k}" for k, n in seen.items())
    print(f"wire_check: {counts} checked; {len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

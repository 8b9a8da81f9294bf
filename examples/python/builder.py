#!/usr/bin/env python3
"""Build examples/mixed.json's workflow in Python and wait for it: Warren's
Rust worker greets (`echo`, queue default), the Python worker reverses
(`py.reverse`, queue python: run examples/python/sdk_worker.py), Rust
publishes both.

    python3 examples/python/builder.py

Environment: AMQP_ADDR, WARREN_NAMESPACE (as for producer.py).
"""

import os

import warren

wf = warren.Workflow("greeting", input={"name": "Warren"})
greet = wf.task("greet", type="echo", input={"text": f"hello {wf.input['name']}"})
rev = wf.task(
    "reverse",
    type="py.reverse",
    queue="python",
    depends_on=[greet],
    input={"text": greet.output["text"]},
)
wf.task(
    "publish",
    type="echo",
    depends_on=[rev],
    input={"original": greet.output["text"], "reversed": rev.output["text"]},
)

with warren.Client(
    url=os.environ.get("AMQP_ADDR", "amqp://127.0.0.1:5672/%2f"),
    namespace=os.environ.get("WARREN_NAMESPACE", "warren"),
) as client:
    report = client.submit_and_wait(wf, timeout=60)
print(report.status, report.output("publish"))

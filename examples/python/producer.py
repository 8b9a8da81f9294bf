#!/usr/bin/env python3
"""Submit a Warren workflow with pika and wait for its outcome, RPC style.

    python3 examples/python/producer.py examples/mixed.json

Environment: AMQP_ADDR (default amqp://127.0.0.1:5672/%2f, guest/guest),
WARREN_NAMESPACE (default warren), WARREN_TIMEOUT in seconds (default 60).
Prints the workflow report; exits 0 when the workflow succeeded, 1 when it
failed or was rejected, 2 when no outcome came in time.

Nothing here is Warren-specific code: it follows docs/protocol.md with a
plain AMQP client.
"""
import json
import os
import sys
import uuid

import pika

URL = os.environ.get("AMQP_ADDR", "amqp://127.0.0.1:5672/%2f")
NS = os.environ.get("WARREN_NAMESPACE", "warren")
TIMEOUT = float(os.environ.get("WARREN_TIMEOUT", "60"))


def main(path):
    with open(path, encoding="utf-8") as f:
        request = json.load(f)
    # The id is the idempotency key: re-sending this request never runs the
    # workflow twice.
    request.setdefault("id", "py-" + uuid.uuid4().hex[:12])

    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()  # basic_publish raises if the broker refuses
        reply_to = ch.queue_declare("", exclusive=True).method.queue
        correlation_id = uuid.uuid4().hex
        ch.basic_publish(
            exchange=NS + ".workflows",
            routing_key="",
            body=json.dumps(request).encode(),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                message_id=request["id"],
                reply_to=reply_to,
                correlation_id=correlation_id,
            ),
            mandatory=True,
        )
        print(f"submitted {request['id']}", file=sys.stderr)
        for method, props, body in ch.consume(
            reply_to, auto_ack=True, inactivity_timeout=TIMEOUT
        ):
            if method is None:
                print(f"no outcome within {TIMEOUT:g} s", file=sys.stderr)
                return 2
            if props.correlation_id == correlation_id:
                report = json.loads(body)
                break
        ch.cancel()
    finally:
        conn.close()

    print(json.dumps(report, indent=2))
    if report["status"] == "rejected":
        for e in report.get("errors", []):
            print(f"rejected: {e['code']}: {e['message']}", file=sys.stderr)
    return 0 if report["status"] == "succeeded" else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: producer.py WORKFLOW.json")
    sys.exit(main(sys.argv[1]))

#!/usr/bin/env python3
"""Submit a Warren workflow from a JSON file and wait for its outcome, with
the Python SDK (clients/python).

    python3 examples/python/producer.py examples/mixed.json

Environment: AMQP_ADDR (default amqp://127.0.0.1:5672/%2f, guest/guest),
WARREN_NAMESPACE (default warren), WARREN_TIMEOUT in seconds (default 60).
Prints the workflow report; exits 0 when the workflow succeeded, 1 when it
failed or was rejected, 2 when no outcome came in time.

It uses the installed `warren` package (`pip install ./clients/python`),
or, run from a checkout where it is not installed, the package's sources
next to this file (it still needs aio-pika). examples/python/worker.py
shows the same protocol with a plain AMQP client.
"""

import json
import os
import sys
from pathlib import Path

try:
    import warren
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python" / "src"))
    import warren

URL = os.environ.get("AMQP_ADDR", "amqp://127.0.0.1:5672/%2f")
NS = os.environ.get("WARREN_NAMESPACE", "warren")
TIMEOUT = float(os.environ.get("WARREN_TIMEOUT", "60"))


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        request = json.load(f)
    with warren.Client(url=URL, namespace=NS) as client:
        try:
            # The id (the request's, or a fresh one) is the idempotency key:
            # re-sending this request never runs the workflow twice.
            report = client.submit_and_wait(request, timeout=TIMEOUT)
        except warren.Timeout as e:
            print(f"no outcome of {e.workflow_id} within {TIMEOUT:g} s", file=sys.stderr)
            return 2
        except warren.Rejected as e:
            for p in e.errors:
                print(f"rejected: {p}", file=sys.stderr)
            if e.report is not None:
                print(json.dumps(e.report.raw, indent=2))
            return 1
    print(json.dumps(report.raw, indent=2))
    return 0 if report.succeeded else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: producer.py WORKFLOW.json")
    sys.exit(main(sys.argv[1]))

#!/bin/sh
# Submit a Warren workflow with Debian's amqp-tools and print its outcome.
#
#   sh examples/shell/submit.sh examples/order.json
#
# Environment: AMQP_ADDR (default amqp://127.0.0.1:5672/%2f, guest/guest),
# WARREN_NAMESPACE (default warren), WARREN_TIMEOUT in seconds (default 60).
# The outcome (a workflow report, JSON) is printed to stdout. The request
# goes out with reply_to set to a queue this script declares first, so the
# reply cannot be missed; the queue is deleted on exit.
set -eu
file=${1:?usage: submit.sh WORKFLOW.json}
url=${AMQP_ADDR:-amqp://127.0.0.1:5672/%2f}
ns=${WARREN_NAMESPACE:-warren}
reply="$ns.reply.shell-$$"

[ -r "$file" ] || { echo "submit.sh: cannot read $file" >&2; exit 2; }
amqp-declare-queue --url="$url" --queue="$reply" >/dev/null
trap 'amqp-delete-queue --url="$url" --queue="$reply" >/dev/null 2>&1 || true' EXIT

amqp-publish --url="$url" --exchange="$ns.workflows" --routing-key="" \
  --persistent --content-type=application/json --reply-to="$reply" <"$file"

# One message: the outcome. amqp-consume pipes each body to the command.
timeout "${WARREN_TIMEOUT:-60}" \
  amqp-consume --url="$url" --queue="$reply" --count=1 cat
echo

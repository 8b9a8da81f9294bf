//! Redelivered tasks: moved to the pool's suspect queue with their delivery
//! count raised, and answered with a failed result past `max_deliveries`.
//!
//! A redelivered task's last run ended without an ack (its worker crashed,
//! hung, lost its connection or stopped), maybe because of this task, maybe
//! because of another that ran beside it. Classic queues do not count
//! deliveries, so the worker does, in the `warren-deliveries` header.
//! Suspects run alone (see `execute`), so once a task is a suspect only its
//! own crashes raise its count, and a task that crashes every worker that
//! runs it fails rather than being redelivered forever.

use crate::publish::{Outgoing, Publisher, Received};
use chrono::Utc;
use lapin::{BasicProperties, types::AMQPValue};
use warren_shared::{
    Topology, amqp,
    wire::{HEADER_DELIVERIES, ResultStatus, TaskError, TaskMessage, TaskResult},
};

/// The delivery count of a redelivered task, this delivery included: one
/// more than its header says (a task without the header was delivered once
/// before).
fn deliveries(props: &BasicProperties) -> i64 {
    let seen = amqp::header_int(props, HEADER_DELIVERIES)
        .unwrap_or(1)
        .max(1);
    seen.saturating_add(1)
}

/// Handles the redelivered task `msg`: moves it to the suspect queue of its
/// pool with the count raised (confirmed, then acks this delivery and waits
/// until the ack is sent), or, past `max_deliveries`, answers it with a
/// failed result. The caller holds the session's shared turn meanwhile, so
/// the copy cannot run alone here before the original's ack is out.
pub(crate) async fn suspect(
    publisher: &Publisher,
    worker_id: &str,
    max_deliveries: u32,
    r: &Received,
    msg: TaskMessage,
) {
    let d = &r.delivery;
    let deliveries = deliveries(&d.properties);
    if deliveries > i64::from(max_deliveries) {
        tracing::error!(workflow = %msg.workflow_id, task = %msg.task_id, deliveries, "Giving up on a task that never finishes");
        let now = Utc::now();
        let result = TaskResult {
            error: Some(TaskError {
                message: format!(
                    "delivered {deliveries} times without finishing: the task crashes, hangs or outlives its worker"
                ),
                retryable: false,
            }),
            started_at: Some(now),
            finished_at: Some(now),
            ..msg.result(ResultStatus::Failed, worker_id)
        };
        publisher.result(r, &result).await;
        return;
    }
    tracing::warn!(workflow = %msg.workflow_id, task = %msg.task_id, deliveries, "Task redelivered; it will run alone");
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(HEADER_DELIVERIES.into(), AMQPValue::LongLongInt(deliveries));
    let props = d.properties.clone().with_headers(headers);
    // Through the requeue exchange: a worker may write to its own pools'
    // queues only (docs/security.md), never through the default exchange.
    let exchange = publisher.topology().requeue();
    let key = Topology::requeue_suspect_key(&r.queue);
    let moved = Outgoing {
        exchange: &exchange,
        key: &key,
        body: &d.data,
        props,
    };
    if let Err(e) = publisher.move_then_ack(r, moved).await {
        tracing::error!(error = %e, "Could not move a redelivered task; leaving it to the broker");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;

    fn check(header: Option<AMQPValue>, expected: i64) {
        let mut props = BasicProperties::default();
        if let Some(v) = header {
            let mut headers = FieldTable::default();
            headers.insert(HEADER_DELIVERIES.into(), v);
            props = props.with_headers(headers);
        }
        assert_eq!(deliveries(&props), expected, "header {:?}", props.headers());
    }

    #[test]
    fn each_redelivery_raises_the_count_by_one() {
        check(None, 2);
        check(Some(AMQPValue::LongLongInt(2)), 3);
        check(Some(AMQPValue::LongLongInt(0)), 2);
        check(Some(AMQPValue::LongLongInt(i64::MAX)), i64::MAX);
    }
}

//! Answering a delivery: publish what it caused, await the broker's
//! confirm, then ack it, or requeue it when the confirm does not come (a
//! nack is first sent again for a while: `nacks`).
//!
//! This is the worker's half of the invariant "a delivery is acked only
//! after what it caused is confirmed", and it lives here alone:
//! [`Publisher::publish_then_settle`] is the path from a published
//! message to an ack, and [`Publisher::result`] the same for a task's
//! result, which may share its message with others (`results`). A
//! redelivered task moved to the suspect queue (`poison`), an undecodable
//! message sent to the dead-letter exchange ([`Publisher::dead_letter`])
//! and a delivery given back unstarted at shutdown
//! ([`Publisher::give_back`]) go through the former. Deliveries answered without a message (a cancelled
//! workflow's tasks) are acked with [`Publisher::ack`].
//!
//! A result is bounded too: one whose JSON body exceeds the worker's
//! `max_result_bytes` is never published; a failed, non-retryable result
//! naming the task, the size and the limit goes instead ([`encode_result`]).
//!
//! When the publishing side itself is lost (the broker closed the channel
//! or the connection: [`watch`] hears it at once, a failed publish too),
//! nothing is requeued: a requeued delivery comes back marked
//! `redelivered`, and the next worker would take it for a task that
//! crashed a worker (see `poison`). The publisher instead holds a copy of
//! every delivery it has not answered ([`Unanswered`]: the running tasks,
//! and those whose message could not be published), and the session,
//! ending, gives them back through a fresh channel
//! ([`Publisher::give_back_unanswered`]).

use crate::{
    nacks,
    results::{self, Batcher, Outcome},
    settle::{Settle, Settler},
};
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, Event,
    message::Delivery,
    options::{BasicAckOptions, BasicRejectOptions},
};
use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, OnceLock},
};
use tokio_util::sync::CancellationToken;
use warren_shared::{
    Topology, amqp,
    wire::{MAX_RESULTS_PER_MESSAGE, ResultStatus, TaskError, TaskResult},
};

/// The most bytes of a message of several results, whatever the worker's
/// result bound: a batch's results are held and answered together, so a
/// large batch would only add latency.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The body to publish for `result`: its JSON, or, when that is longer
/// than `limit` bytes, the JSON of [`oversized`]'s replacement.
pub(crate) fn encode_result(result: &TaskResult, limit: usize) -> Vec<u8> {
    let body = serde_json::to_vec(result).expect("wire types always serialise");
    if body.len() <= limit {
        return body;
    }
    tracing::warn!(
        workflow = %result.workflow_id,
        task = %result.task_id,
        attempt = result.attempt,
        size = body.len(),
        limit,
        "Result too large to publish; failing the task instead"
    );
    let replacement = oversized(result, body.len(), limit);
    drop(body);
    serde_json::to_vec(&replacement).expect("wire types always serialise")
}

/// The failed, non-retryable result that stands in for `result`, whose
/// JSON is `size` bytes, over the worker's `limit`. Another attempt would
/// produce the same output, so none is asked for.
pub(crate) fn oversized(result: &TaskResult, size: usize, limit: usize) -> TaskResult {
    TaskResult {
        workflow_id: result.workflow_id.clone(),
        task_id: result.task_id.clone(),
        attempt: result.attempt,
        token: result.token.clone(),
        status: ResultStatus::Failed,
        output: None,
        error: Some(TaskError {
            message: format!(
                "the result of task `{}` is {size} bytes of JSON, over the worker's limit of \
                 {limit} bytes (WARREN_MAX_RESULT_BYTES); it was not published",
                result.task_id
            ),
            retryable: false,
        }),
        worker: result.worker.clone(),
        started_at: result.started_at,
        finished_at: result.finished_at,
    }
}

/// Which queue of a pool a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    /// `{ns}.tasks.{queue}`: tasks run concurrently.
    Tasks,
    /// `{ns}.suspect.{queue}`: tasks whose last run ended without an ack,
    /// run alone.
    Suspect,
}

/// A delivery being handled, and where it came from.
pub(crate) struct Received {
    /// The pool's queue name (`default`), not the broker's queue name.
    pub queue: String,
    pub source: Source,
    pub delivery: Delivery,
}

/// A copy of `r`, to give back after `r` itself is gone with its task.
fn copy(r: &Received) -> Received {
    let d = &r.delivery;
    Received {
        queue: r.queue.clone(),
        source: r.source,
        delivery: Delivery {
            delivery_tag: d.delivery_tag,
            exchange: d.exchange.clone(),
            routing_key: d.routing_key.clone(),
            redelivered: d.redelivered,
            properties: d.properties.clone(),
            data: d.data.clone(),
            acker: d.acker.clone(),
        },
    }
}

/// Copies of the deliveries a session started or failed to answer, and has
/// not answered since, by channel (their source) and delivery tag: what to
/// give back if publishing is lost. At most the running tasks (the
/// session's `concurrency` and one suspect) and the deliveries the
/// consumers held unstarted when it was lost.
///
/// A delivery that came `redelivered` is never held: given back, it would
/// lose the mark that makes it a suspect. Left unacked, it returns to its
/// queue with the session as it came, and its count (in its header, raised
/// only when it is moved to the suspect queue) does not change.
#[derive(Default)]
pub(crate) struct Unanswered(BTreeMap<(Source, u64), Received>);

impl Unanswered {
    /// Holds a copy of `r` (once), unless it came redelivered.
    fn hold(&mut self, r: &Received) {
        if r.delivery.redelivered {
            return;
        }
        self.0
            .entry((r.source, r.delivery.delivery_tag))
            .or_insert_with(|| copy(r));
    }

    /// Forgets `r`: it is acked, or requeued.
    fn answered(&mut self, r: &Received) {
        self.0.remove(&(r.source, r.delivery.delivery_tag));
    }

    /// Everything held, in delivery order per channel.
    fn take(&mut self) -> Vec<Received> {
        std::mem::take(&mut self.0).into_values().collect()
    }
}

/// Watches `conn`, a session's publishing connection, from this call on
/// (not from the first poll: lapin drops the events nobody listens to yet).
/// Resolves with the broker's reason when it closes a channel of `conn`
/// with an error (a publish to an exchange that does not exist: 404
/// NOT_FOUND, a message over its size limit: 406), or when `conn` fails
/// (closed by the broker, heartbeats missed, the socket lost). Channels
/// and connections closed normally (code 200) are not errors.
///
/// The one listener of `conn`'s events: lapin hands each event to a
/// single listener.
pub(crate) fn watch(conn: &Connection) -> impl Future<Output = String> + Send + 'static {
    let events = conn.events_listener();
    async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if let Event::Error(e) = event {
                return e.to_string();
            }
        }
        // The events end only with the connection's last handle; the
        // publishes still tell (`publish_then_settle`).
        std::future::pending().await
    }
}

/// One message a delivery caused, for [`Publisher::publish_then_settle`].
#[derive(Clone)]
pub(crate) struct Outgoing<'a> {
    pub exchange: &'a str,
    pub key: &'a str,
    pub body: &'a [u8],
    pub props: BasicProperties,
}

/// Publishes and settles for the deliveries of one session.
pub(crate) struct Publisher {
    /// The session's confirmed publishing channel.
    channel: Channel,
    topology: Topology,
    /// Coalesces the acks of the tasks channel (suspects, one at a time on
    /// their own channel, are acked directly).
    settler: Settler,
    /// The largest result body published, in bytes.
    max_result_bytes: usize,
    /// Publishes the results, batched under load (`results`).
    results: Batcher,
    /// Set once the publishing channel or connection is found closed.
    lost: Lost,
    /// What to give back if publishing is lost.
    unanswered: Mutex<Unanswered>,
}

/// Why the publishing side was lost (the first reason heard), and a token
/// cancelled once it is.
#[derive(Default)]
struct Lost {
    reason: OnceLock<String>,
    token: CancellationToken,
}

/// Publishes `out` on `ch` and awaits the broker's confirm.
async fn send(ch: &Channel, out: Outgoing<'_>) -> Result<(), warren_shared::Error> {
    let confirm = amqp::publish(
        ch,
        amqp::Publish {
            exchange: out.exchange,
            routing_key: out.key,
            mandatory: true,
            body: out.body,
            properties: out.props,
        },
    )
    .await?;
    amqp::confirmed(confirm, out.exchange, out.key).await
}

impl Publisher {
    /// `channel` must be in confirm mode. Results go at most
    /// `result_batch` to a message (see `results`).
    pub fn new(
        channel: Channel,
        topology: Topology,
        settler: Settler,
        (max_result_bytes, result_batch): (usize, usize),
    ) -> Publisher {
        let bounds = results::Bounds {
            count: result_batch.clamp(1, MAX_RESULTS_PER_MESSAGE),
            bytes: max_result_bytes.min(MAX_BATCH_BYTES),
        };
        Publisher {
            results: Batcher::spawn(channel.clone(), topology.results(), bounds),
            channel,
            topology,
            settler,
            max_result_bytes,
            lost: Lost::default(),
            unanswered: Mutex::default(),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Records that `r`'s task starts: until it is answered, a copy is
    /// held, to give back if publishing is lost meanwhile.
    pub fn started(&self, r: &Received) {
        self.unanswered().hold(r);
    }

    fn unanswered(&self) -> MutexGuard<'_, Unanswered> {
        self.unanswered.lock().expect("not poisoned")
    }

    /// Marks the publishing side lost, for `reason` (the first one kept):
    /// from now on, what cannot be published is held, not requeued.
    pub fn lose(&self, reason: &str) {
        let _ = self.lost.reason.set(reason.to_owned());
        self.lost.token.cancel();
    }

    fn is_lost(&self) -> bool {
        self.lost.token.is_cancelled()
    }

    /// Resolves with the reason once the publishing side is lost.
    pub async fn lost(&self) -> String {
        self.lost.token.cancelled().await;
        self.lost.reason.get().cloned().unwrap_or_default()
    }

    /// Acks a task whose outcome is safely on the broker.
    pub async fn ack(&self, r: &Received) {
        self.unanswered().answered(r);
        let d = &r.delivery;
        match r.source {
            Source::Tasks => self
                .settler
                .send(Settle::Ack(d.acker.clone(), d.delivery_tag)),
            Source::Suspect => {
                if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(error = %e, "Ack failed; the task will be redelivered");
                }
            }
        }
    }

    /// Acks `r` at once and waits until the ack is sent; the coalescing
    /// settler only records it, as it does a rejected delivery.
    async fn ack_now(&self, r: &Received) {
        self.unanswered().answered(r);
        let d = &r.delivery;
        if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
            tracing::warn!(error = %e, "Ack failed; the task will be redelivered");
        }
        if r.source == Source::Tasks {
            self.settler.send(Settle::Settled(d.delivery_tag));
        }
    }

    /// Returns a task to its queue.
    async fn requeue(&self, r: &Received) {
        self.unanswered().answered(r);
        let d = &r.delivery;
        let _ = d.acker.reject(BasicRejectOptions { requeue: true }).await;
        if r.source == Source::Tasks {
            self.settler.send(Settle::Settled(d.delivery_tag));
        }
    }

    /// Publishes what a delivery caused (mandatory), awaits the broker's
    /// confirm, then acks the delivery. When the broker refuses the message
    /// (a nack that outlasts `nacks`' retries, no queue to route to) the
    /// delivery is requeued, never acked; when the channel is gone, the publisher is marked lost and
    /// the delivery held, for the session to give back. Either way the
    /// error is returned for the caller to log.
    pub async fn publish_then_settle(
        &self,
        r: &Received,
        out: Outgoing<'_>,
    ) -> Result<(), warren_shared::Error> {
        self.publish_then(r, out, false).await
    }

    /// As [`Publisher::publish_then_settle`], but the ack is sent at once
    /// and awaited, not coalesced: for a redelivered task moved to the
    /// suspect queue (`poison`), whose copy must not run in this process
    /// while the original is still unacked (a crash then would bring both
    /// back).
    pub async fn move_then_ack(
        &self,
        r: &Received,
        out: Outgoing<'_>,
    ) -> Result<(), warren_shared::Error> {
        self.publish_then(r, out, true).await
    }

    async fn publish_then(
        &self,
        r: &Received,
        out: Outgoing<'_>,
        ack_now: bool,
    ) -> Result<(), warren_shared::Error> {
        let open = || self.channel.status().connected();
        match nacks::through_nacks(open, || send(&self.channel, out.clone())).await {
            Ok(()) if ack_now => {
                self.ack_now(r).await;
                Ok(())
            }
            Ok(()) => {
                self.ack(r).await;
                Ok(())
            }
            // Not this message's fault: a requeue would mark the delivery
            // as if its task had crashed a worker.
            Err(e) if !self.channel.status().connected() => {
                self.lose(&e.to_string());
                self.unanswered().hold(r);
                Err(e)
            }
            Err(e) => {
                self.requeue(r).await;
                Err(e)
            }
        }
    }

    /// Publishes the result, alone or with others in one message
    /// (`results`), awaits that message's confirm, then acks the task. When
    /// it cannot be confirmed the task is requeued, never acked; when
    /// publishing is lost, the task is held to be given back. A result over
    /// `max_result_bytes` is replaced by a failed one saying so (see
    /// [`encode_result`]).
    pub async fn result(&self, r: &Received, result: &TaskResult) {
        let body = encode_result(result, self.max_result_bytes);
        // A scheduler sharing the namespace with others names the queue of
        // the workflow's partition in `reply_to`, bound to the results
        // exchange by its name; anything else goes to the shared results
        // queue (whichever scheduler receives it forwards it).
        let key = self.topology.result_route(
            r.delivery
                .properties
                .reply_to()
                .as_ref()
                .map(|q| q.as_str()),
        );
        let message_id = format!(
            "{}/{}/{}",
            result.workflow_id, result.task_id, result.attempt
        );
        match self.results.publish(key, body, message_id).await {
            Outcome::Confirmed => self.ack(r).await,
            // Not this message's fault: a requeue would mark the delivery
            // as if its task had crashed a worker.
            Outcome::Lost(e) => {
                self.lose(&e);
                self.unanswered().hold(r);
                tracing::debug!(error = %e, workflow = %result.workflow_id, task = %result.task_id, "Result not published: publishing is lost; the task returns to its queue with the session");
            }
            Outcome::Refused(e) => {
                self.requeue(r).await;
                tracing::error!(error = %e, workflow = %result.workflow_id, task = %result.task_id, "Result not confirmed; requeueing the task");
            }
        }
    }

    /// Returns a delivery that was never started to its queue without
    /// marking it: publishes it again as it came (confirmed), then acks
    /// it. A requeue would set `redelivered`, which the next worker reads
    /// as "its last run crashed". A delivery that came redelivered keeps
    /// that mark: it is left unacked, to return with the session. Once
    /// publishing is lost, it is held, for the session to give back.
    pub async fn give_back(&self, r: &Received) {
        if r.delivery.redelivered {
            return;
        }
        if self.is_lost() {
            self.unanswered().hold(r);
            return;
        }
        let (exchange, key) = self.way_back(r);
        if let Err(e) = self
            .publish_then_settle(r, given_back(r, &exchange, &key))
            .await
        {
            tracing::warn!(error = %e, queue = %key, "Could not give a task back; it returns with the session");
        }
    }

    /// The way back to the queue `r` came from: the requeue exchange and
    /// the queue's key on it.
    fn way_back(&self, r: &Received) -> (String, String) {
        let key = match r.source {
            Source::Tasks => Topology::requeue_task_key(&r.queue),
            Source::Suspect => Topology::requeue_suspect_key(&r.queue),
        };
        (self.topology.requeue(), key)
    }

    /// True when deliveries are held unanswered.
    pub fn holds_unanswered(&self) -> bool {
        !self.unanswered().0.is_empty()
    }

    /// After publishing was lost and every task of the session stopped:
    /// gives back what is held unanswered through `ch`, a fresh confirmed
    /// channel: each delivery published again to its queue as it came,
    /// confirmed, then acked. One whose consuming channel is gone too (it
    /// cannot be acked any more) or that cannot be published is left to
    /// return with the session. Returns how many were given back and how
    /// many left.
    pub async fn give_back_unanswered(&self, ch: &Channel) -> (usize, usize) {
        let held = self.unanswered().take();
        let mut given = 0;
        for r in &held {
            if !r.delivery.acker.usable() {
                continue;
            }
            let (exchange, key) = self.way_back(r);
            match send(ch, given_back(r, &exchange, &key)).await {
                Ok(()) => {
                    self.ack(r).await;
                    given += 1;
                }
                Err(e) => {
                    tracing::debug!(error = %e, queue = %key, "Could not give a task back; it returns with the session");
                }
            }
        }
        (given, held.len() - given)
    }

    /// Sends a task message nothing can be made of to `{ns}.dead`, then
    /// acks it.
    pub async fn dead_letter(&self, r: &Received, reason: &str) {
        let queue = r.queue.as_str();
        tracing::warn!(queue, %reason, "Dead-lettering a task message");
        let exchange = self.topology.dead();
        let d = &r.delivery;
        let props = amqp::dead_letter_properties(d, &self.topology.task_queue(queue), reason);
        let out = Outgoing {
            exchange: &exchange,
            key: "",
            body: &d.data,
            props,
        };
        match self.publish_then_settle(r, out).await {
            Ok(()) => {}
            Err(e) if self.is_lost() => {
                tracing::debug!(error = %e, "Dead-lettering failed: publishing is lost; the message returns to its queue with the session");
            }
            Err(e) => tracing::error!(error = %e, "Dead-lettering failed; requeueing"),
        }
    }
}

/// `r` published again as it came, to `key` on `exchange`: its queue.
fn given_back<'a>(r: &'a Received, exchange: &'a str, key: &'a str) -> Outgoing<'a> {
    Outgoing {
        exchange,
        key,
        body: &r.delivery.data,
        props: r.delivery.properties.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn succeeded(output: serde_json::Value) -> TaskResult {
        TaskResult {
            workflow_id: "wf".into(),
            task_id: "big".into(),
            attempt: 2,
            token: "t".into(),
            status: ResultStatus::Succeeded,
            output: Some(output),
            error: None,
            worker: "w1".into(),
            started_at: Some(chrono::Utc::now()),
            finished_at: Some(chrono::Utc::now()),
        }
    }

    fn received(source: Source, tag: u64, redelivered: bool) -> Received {
        Received {
            queue: "default".into(),
            source,
            delivery: Delivery::mock(tag, "".into(), "k".into(), redelivered, vec![tag as u8]),
        }
    }

    fn keys(held: &[Received]) -> Vec<(Source, u64, Vec<u8>)> {
        held.iter()
            .map(|r| (r.source, r.delivery.delivery_tag, r.delivery.data.clone()))
            .collect()
    }

    #[test]
    fn what_is_held_is_what_was_started_and_not_answered_in_delivery_order() {
        let mut u = Unanswered::default();
        let (t1, t2, t3) = (
            received(Source::Tasks, 1, false),
            received(Source::Tasks, 2, false),
            received(Source::Tasks, 3, false),
        );
        // Tags are per channel: a suspect's 1 is not the task's 1.
        let s1 = received(Source::Suspect, 1, false);
        for r in [&t3, &s1, &t1, &t2] {
            u.hold(r);
        }
        u.answered(&t2);
        // Held again after a failed publish: still once.
        u.hold(&t3);
        assert_eq!(
            keys(&u.take()),
            vec![
                (Source::Tasks, 1, vec![1]),
                (Source::Tasks, 3, vec![3]),
                (Source::Suspect, 1, vec![1]),
            ]
        );
        assert!(u.take().is_empty(), "taken once");
    }

    #[test]
    fn a_redelivered_delivery_is_never_held() {
        let mut u = Unanswered::default();
        u.hold(&received(Source::Tasks, 1, true));
        assert!(
            u.take().is_empty(),
            "given back, it would lose the mark that makes it a suspect"
        );
    }

    #[test]
    fn a_copy_is_the_delivery_as_it_came() {
        let mut r = received(Source::Suspect, 7, false);
        r.delivery.properties = amqp::json_properties().with_priority(3);
        let c = copy(&r);
        assert_eq!((c.queue.as_str(), c.source), ("default", Source::Suspect));
        assert_eq!(c.delivery, r.delivery);
    }

    #[test]
    fn a_result_within_the_limit_is_published_as_it_is() {
        let r = succeeded(json!({"n": 1}));
        let exact = serde_json::to_vec(&r).unwrap();
        assert_eq!(
            encode_result(&r, exact.len()),
            exact,
            "the limit is inclusive"
        );
        assert_eq!(encode_result(&r, usize::MAX), exact);
    }

    #[test]
    fn an_oversized_result_becomes_a_failed_one_naming_task_size_and_limit() {
        let r = succeeded(json!("x".repeat(5000)));
        let size = serde_json::to_vec(&r).unwrap().len();
        let body = encode_result(&r, 4096);
        assert!(
            body.len() < 1024,
            "the replacement is small: {}",
            body.len()
        );
        let sent: TaskResult = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent, oversized(&r, size, 4096));
        assert_eq!(
            (
                sent.workflow_id.as_str(),
                sent.task_id.as_str(),
                sent.attempt
            ),
            ("wf", "big", 2),
            "the same attempt is answered"
        );
        assert_eq!((sent.status, sent.output), (ResultStatus::Failed, None));
        assert_eq!((sent.worker, sent.started_at), (r.worker, r.started_at));
        let error = sent.error.unwrap();
        assert!(!error.retryable, "another attempt would be as large");
        for part in ["`big`", &format!("{size} bytes"), "4096 bytes"] {
            assert!(error.message.contains(part), "{part}: {}", error.message);
        }
    }

    #[test]
    fn an_oversized_error_message_is_bounded_too() {
        let mut r = succeeded(json!(null));
        r.output = None;
        r.status = ResultStatus::Failed;
        r.error = Some(TaskError {
            message: "e".repeat(10_000),
            retryable: true,
        });
        let sent: TaskResult = serde_json::from_slice(&encode_result(&r, 2048)).unwrap();
        let error = sent.error.unwrap();
        assert!(!error.retryable && error.message.contains("2048 bytes"));
    }
}

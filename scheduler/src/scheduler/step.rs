//! One batch of the loop: take what has arrived, apply it to the engine,
//! commit, publish, ack.
//!
//! Requests and results are decoded first; what belongs to a partition
//! another scheduler owns is set aside to be forwarded. The ids the engine
//! does not hold are looked up in the store with one call. Then everything
//! is applied in memory, due timers fire, ready tasks are dispatched (on
//! partitioned stores, after asking the store for places of limited types),
//! and the batch's ops and outbox rows are committed in one transaction.
//! Only then are the messages published (with confirms), the forwards
//! sent, and the deliveries acked with one multiple-ack per channel; the
//! published outbox rows are deleted with the next commit.

use crate::{
    batch::{Known, Op, OutKind, OutMsg},
    engine::Engine,
    metrics::Metrics,
    store::{Partitions, Store},
};
use chrono::Utc;
use lapin::{Channel, Connection, options::BasicAckOptions};
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};
use warren_shared::wire::{HEADER_FORWARDED, TYPE_RESULT, TaskResult};

use super::{
    Scheduler, SchedulerError, batched,
    consume::Inbound,
    ownership::Ownership,
    publisher::{Forward, Publisher},
    request::{Lookups, Request},
    schedules,
    waiting::{self, Waiting},
};

/// Decodes one result's `body` (it came alone or in a message of several):
/// one of a partition another scheduler owns is set aside to be forwarded.
fn sort_result(
    owned: &Ownership,
    body: Vec<u8>,
    properties: &lapin::BasicProperties,
    items: &mut Vec<Item>,
    forwards: &mut Vec<Forward>,
) {
    let parsed = serde_json::from_slice::<TaskResult>(&body);
    match parsed {
        Ok(r) if owned.partitioned && !owned.owns(owned.part_of(&r.workflow_id)) => {
            forwards.push(Forward {
                part: owned.part_of(&r.workflow_id),
                properties: properties.clone(),
                body,
                request: false,
            });
        }
        parsed => items.push(Item::Result { parsed, body }),
    }
}

/// What a batch needs to know of the session: its channels and which
/// partitions it owns.
pub(super) struct Ctx<'a> {
    pub(super) requests_ch: &'a Channel,
    pub(super) control_ch: &'a Channel,
    pub(super) results_ch: &'a Channel,
    /// Consume the owned partitions' queues, one each (partitioned stores
    /// only).
    pub(super) owned_ch: &'a [Channel],
    pub(super) owned: &'a Ownership,
    /// Opens channels again after the broker closed one.
    pub(super) publish_conn: &'a Connection,
}

/// What the loop of a session carries from turn to turn and its batches
/// change.
pub(super) struct LoopState {
    pub(super) engine: Engine,
    /// Remembers the task queues it has declared.
    pub(super) publisher: Publisher,
    /// Limited types the store had no place for: asked again at the next
    /// balance tick, not at every batch.
    pub(super) refused: HashSet<String>,
    /// Submissions waiting, unacked, for room in the memory budget.
    pub(super) waiting: Waiting,
    /// Requests from the HTTP endpoint (a cancel), applied with the next
    /// batch like the deliveries; nothing to ack.
    pub(super) http: Vec<Request>,
}

/// A delivery of this scheduler's partitions, decoded.
enum Item {
    /// A request, with its delivery tag when it came from the requests
    /// queue (and may wait for room in the memory budget).
    Request(Request, Option<u64>),
    Result {
        parsed: Result<TaskResult, serde_json::Error>,
        body: Vec<u8>,
    },
    /// A result over `max_result_bytes`.
    Oversized { body: Vec<u8> },
    /// A message of results unusable as a whole (see `batched`).
    Refused { body: Vec<u8>, reason: String },
}

/// The last delivery tag of each channel in the batch: one multiple-ack
/// each settles the batch; the requests channel's tags each, since some
/// may wait unacked (see `waiting`).
struct Tags {
    request: Vec<u64>,
    control: Option<u64>,
    result: Option<u64>,
    /// By owned partition, as `Ctx::owned_ch`.
    owned: Vec<Option<u64>>,
}

/// A batch decoded: what to apply here, what to forward, what to ack.
struct Sorted {
    items: Vec<Item>,
    forwards: Vec<Forward>,
    tags: Tags,
}

impl Scheduler {
    /// One batch: take → apply → commit → publish → ack (see the module's
    /// documentation). Drains `batch`.
    pub(super) async fn step(
        &self,
        state: &mut LoopState,
        store: &Store,
        ctx: &Ctx<'_>,
        batch: &mut Vec<Inbound>,
    ) -> Result<(), SchedulerError> {
        let LoopState {
            engine,
            publisher,
            refused,
            waiting,
            http,
        } = state;
        let now = Utc::now();
        Metrics::add(&self.metrics.messages_received, batch.len() as u64);
        let Sorted {
            mut items,
            forwards,
            mut tags,
        } = self.sort(batch, ctx)?;
        // Room freed by the last step: the queued workflows it lets in start
        // before this batch's submissions, which queue behind them.
        start_queued(engine, store, now).await?;
        let released = waiting.release_if_room(engine);
        if !released.is_empty() {
            tags.request.extend(released.iter().map(|(tag, _)| *tag));
            let own = std::mem::take(&mut items);
            items.extend(
                released
                    .into_iter()
                    .map(|(tag, r)| Item::Request(r, Some(tag))),
            );
            items.extend(own);
        }
        items.extend(http.drain(..).map(|r| Item::Request(r, None)));
        // A manual prune first: the lookups below see what it left.
        for item in &mut items {
            if let Item::Request(request, _) = item {
                request.prune(store, now).await?;
            }
        }
        let mut known = look_up(engine, store, &items).await?;
        let mut creates = 0;
        for item in &mut items {
            if let Item::Request(request, _) = item {
                request.change_pause(store).await?;
                if let Request::Schedule(s) = request {
                    s.prepare(store, &mut creates).await?;
                }
            }
        }
        for item in items {
            if let Item::Request(request, Some(tag)) = &item
                && request.is_submission()
                && request.lookup_id().is_some_and(|id| {
                    !engine.is_active(id)
                        && !engine.is_queued(id)
                        && !known.workflows.contains_key(id)
                })
                && waiting::must_wait(engine, !waiting.is_empty())
            {
                let tag = *tag;
                let Item::Request(request, _) = item else {
                    unreachable!("matched above")
                };
                tags.request.retain(|t| *t != tag);
                waiting.push(tag, request);
                continue;
            }
            // A status or cancel of a submission still waiting for room:
            // that submission is taken first, over the budget (one at a
            // time), so the answer is about it and a cancel takes hold.
            if let Item::Request(request, _) = &item
                && !request.is_submission()
                && let Some(id) = request.lookup_id()
                && let Some((tag, submission)) = waiting.take(id)
            {
                tags.request.push(tag);
                self.apply(
                    engine,
                    Item::Request(submission, Some(tag)),
                    &mut known,
                    now,
                );
            }
            self.apply(engine, item, &mut known, now);
        }
        self.metrics
            .requests_waiting
            .store(waiting.len() as u64, std::sync::atomic::Ordering::Relaxed);
        engine.fire_due(now.timestamp_millis());
        start_due(engine, store, now).await?;
        schedules::fire_due(engine, store, now).await?;
        engine.dispatch(now);
        if let Some(parts) = store.partitioned() {
            negotiate_type_places(engine, parts, refused, now).await?;
        }
        engine.emit_progress(now);
        engine.prune_due(now);

        let msgs = self
            .commit_and_publish(engine, store, publisher, ctx)
            .await?;
        if !forwards.is_empty() {
            Metrics::add(&self.metrics.forwarded, forwards.len() as u64);
            publisher.forward(&forwards).await?;
        }
        ack(ctx, tags, waiting.is_empty()).await?;
        for (seq, m) in &msgs {
            if m.kind != OutKind::Progress {
                engine.push_op(Op::OutboxDone(*seq));
            }
        }
        Ok(())
    }

    /// Commits the engine's batch, then publishes its messages. A message
    /// the broker refuses for good ends what it belonged to: that change
    /// (and its own messages) is committed and published in turn, a few
    /// rounds at most (what is left rides with the next batch). Returns
    /// what was published.
    async fn commit_and_publish(
        &self,
        engine: &mut Engine,
        store: &Store,
        publisher: &mut Publisher,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<(u64, Arc<OutMsg>)>, SchedulerError> {
        const ROUNDS: usize = 3;
        let mut published = Vec::new();
        for _ in 0..ROUNDS {
            let (ops, msgs) = engine.take_batch();
            if !ops.is_empty() {
                store.commit(ops).await?;
                Metrics::add(&self.metrics.batches_committed, 1);
            }
            let refused = publisher
                .publish_all(ctx.publish_conn, &msgs, &self.metrics)
                .await?;
            if refused.is_empty() {
                published.extend(msgs);
                break;
            }
            let now = Utc::now();
            for r in &refused {
                engine.message_refused(&r.msg, &r.reason, now);
                engine.push_op(Op::OutboxDone(r.seq));
            }
            published.extend(
                msgs.into_iter()
                    .filter(|(seq, _)| !refused.iter().any(|r| r.seq == *seq)),
            );
        }
        Ok(published)
    }

    /// Decodes the batch's deliveries, setting aside those of partitions
    /// another scheduler owns to be forwarded to that partition's queue.
    /// A consumer that ended ends the session.
    fn sort(&self, batch: &mut Vec<Inbound>, ctx: &Ctx<'_>) -> Result<Sorted, SchedulerError> {
        let mut tags = Tags {
            request: Vec::new(),
            control: None,
            result: None,
            owned: vec![None; ctx.owned_ch.len()],
        };
        let mut forwards: Vec<Forward> = Vec::new();
        let mut items = Vec::with_capacity(batch.len());
        for inbound in batch.drain(..) {
            let mut control_only = false;
            let (d, request, from_requests) = match inbound {
                Inbound::Request(d) => {
                    tags.request.push(d.delivery_tag);
                    let tag = Some(d.delivery_tag);
                    (d, true, tag)
                }
                Inbound::Control(d) => {
                    tags.control = Some(d.delivery_tag);
                    // Parsed as a request, but a submission here is refused.
                    control_only = true;
                    (d, true, None)
                }
                Inbound::Result(d) => {
                    tags.result = Some(d.delivery_tag);
                    (d, false, None)
                }
                Inbound::Owned(i, d) => {
                    tags.owned[i] = Some(d.delivery_tag);
                    // Forwards come through the default exchange, which
                    // only schedulers may write to (docs/security.md);
                    // workers reach this queue through the results
                    // exchange, so a "forward" from one is read as the
                    // result it claims not to be, and dead-lettered.
                    let forwarded = d.exchange.as_str().is_empty()
                        && d.properties
                            .headers()
                            .as_ref()
                            .and_then(|h| h.inner().get(HEADER_FORWARDED).cloned())
                            .is_some();
                    (d, forwarded, None)
                }
                Inbound::Ended { queue, reason } => {
                    return Err(SchedulerError::ConsumerEnded { queue, reason });
                }
            };
            let owned = ctx.owned;
            if request {
                let copy = owned
                    .partitioned
                    .then(|| (d.properties.clone(), d.data.clone()));
                let parsed = self.parse_request(d, owned);
                let parsed = if control_only {
                    parsed.control_only()
                } else {
                    parsed
                };
                match (copy, parsed.route_id().map(|id| owned.part_of(id))) {
                    (Some((properties, body)), Some(part)) if !owned.owns(part) => {
                        forwards.push(Forward {
                            part,
                            properties,
                            body,
                            request: true,
                        });
                    }
                    _ => items.push(Item::Request(parsed, from_requests)),
                }
            } else if d.data.len() > self.config.bounds.max_result_bytes {
                // Not even parsed: dead-lettered whole (the broker took it,
                // so it is within the broker's limit), the reason naming
                // the size and the limit. Its attempt ends by its lease.
                Metrics::add(&self.metrics.results_too_large, 1);
                items.push(Item::Oversized { body: d.data });
            } else if batched::is_batch(&d.data) {
                match batched::split(&d.data) {
                    Ok(bodies) => {
                        // Forwarded alone, as if it had come alone.
                        let props = d.properties.clone().with_type(TYPE_RESULT.into());
                        for body in bodies {
                            sort_result(owned, body, &props, &mut items, &mut forwards);
                        }
                    }
                    Err(reason) => items.push(Item::Refused {
                        body: d.data,
                        reason,
                    }),
                }
            } else {
                sort_result(owned, d.data, &d.properties, &mut items, &mut forwards);
            }
        }
        Ok(Sorted {
            items,
            forwards,
            tags,
        })
    }

    /// Applies one decoded delivery to the engine; an undecodable result is
    /// dead-lettered.
    fn apply(
        &self,
        engine: &mut Engine,
        item: Item,
        known: &mut Lookups,
        now: chrono::DateTime<Utc>,
    ) {
        match item {
            Item::Request(request, _) => self.apply_request(engine, request, known, now),
            Item::Result { parsed, body } => match parsed {
                Ok(result) => {
                    if let Err(forged) = engine.on_result(result, now) {
                        engine.dead_letter(
                            body,
                            &self.config.amqp.topology().results(),
                            &forged.reason,
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Undecodable result dead-lettered");
                    engine.dead_letter(
                        body,
                        &self.config.amqp.topology().results(),
                        &format!("undecodable result: {e}"),
                    );
                }
            },
            Item::Oversized { body } => {
                let reason = format!(
                    "result of {} bytes, over the limit of {} (WARREN_MAX_RESULT_BYTES)",
                    body.len(),
                    self.config.bounds.max_result_bytes
                );
                tracing::warn!(%reason, "Oversized result dead-lettered");
                engine.dead_letter(body, &self.config.amqp.topology().results(), &reason);
            }
            Item::Refused { body, reason } => {
                tracing::warn!(%reason, "Message of results dead-lettered");
                engine.dead_letter(body, &self.config.amqp.topology().results(), &reason);
            }
        }
    }
}

/// Most delayed or queued workflows started in one step: the rest are
/// due too, and the loop takes another turn at once (a step stays bounded
/// when thousands fall due together or room frees for many).
const MAX_STARTS_PER_STEP: usize = 1_000;

/// Starts the delayed workflows that have fallen due.
async fn start_due(
    engine: &mut Engine,
    store: &Store,
    now: chrono::DateTime<Utc>,
) -> Result<(), SchedulerError> {
    let due = engine.take_due_starts(now.timestamp_millis(), MAX_STARTS_PER_STEP);
    start(engine, store, due, now).await
}

/// Starts the queued workflows that the working set has room for now.
/// Taken at the start of a step, so that every queued row is committed.
async fn start_queued(
    engine: &mut Engine,
    store: &Store,
    now: chrono::DateTime<Utc>,
) -> Result<(), SchedulerError> {
    let startable = engine.take_startable(MAX_STARTS_PER_STEP);
    start(engine, store, startable, now).await
}

/// Starts workflows taken from those waiting (delayed or queued): their
/// definitions read from the store in one call, each validated again as a
/// restore would.
async fn start(
    engine: &mut Engine,
    store: &Store,
    ids: Vec<Arc<str>>,
    now: chrono::DateTime<Utc>,
) -> Result<(), SchedulerError> {
    if ids.is_empty() {
        return Ok(());
    }
    let wanted: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let mut found: HashMap<String, Vec<u8>> = store
        .unstarted_definitions(wanted)
        .await?
        .into_iter()
        .collect();
    for id in ids {
        match found.remove(&*id) {
            Some(definition) => match crate::validate::validate_stored(&definition, &id) {
                Ok(v) => engine.start_unstarted(v, &definition, now),
                Err(r) => engine.fail_unstarted(
                    &id,
                    &format!("its stored definition no longer validates: {:?}", r.errors),
                    now,
                ),
            },
            None => engine.fail_unstarted(&id, "its stored definition is gone", now),
        }
    }
    Ok(())
}

/// What the store knows of the requests' workflows that the engine does
/// not hold (ended ones, or unknown), in one call, and of the tasks
/// `status` requests ask for alone.
async fn look_up(
    engine: &Engine,
    store: &Store,
    items: &[Item],
) -> Result<Lookups, SchedulerError> {
    let lookup: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Item::Request(r, _) => r.lookup_id(),
            Item::Result { .. } | Item::Oversized { .. } | Item::Refused { .. } => None,
        })
        .filter(|id| !engine.is_active(id))
        .map(str::to_owned)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut known: HashMap<String, Known> = HashMap::new();
    if !lookup.is_empty() {
        let found = store.lookup(lookup.clone()).await?;
        known.extend(
            lookup
                .into_iter()
                .zip(found)
                .filter_map(|(id, k)| Some((id, k?))),
        );
    }
    let mut tasks = HashMap::new();
    for (id, task) in items.iter().filter_map(|i| match i {
        Item::Request(r, _) => r.task_lookup(),
        Item::Result { .. } | Item::Oversized { .. } | Item::Refused { .. } => None,
    }) {
        if known.contains_key(id)
            && let Some(row) = store.task_row(id, task).await?
        {
            tasks.insert((id.to_owned(), task.to_owned()), row);
        }
    }
    // A rerun of a workflow not running here reads it back whole.
    let mut stored = HashMap::new();
    for id in items.iter().filter_map(|i| match i {
        Item::Request(r, _) => r.rerun_id(),
        Item::Result { .. } | Item::Oversized { .. } | Item::Refused { .. } => None,
    }) {
        if !engine.is_active(id) && !engine.is_unstarted(id) && !stored.contains_key(id) {
            stored.insert(id.to_owned(), store.stored_workflow(id).await?);
        }
    }
    Ok(Lookups {
        workflows: known,
        tasks,
        stored,
    })
}

/// Limits per task type are counted in the store across the schedulers
/// (partitioned stores): a type at this scheduler's places asks for more,
/// unless it was `refused` since the last balance tick.
async fn negotiate_type_places(
    engine: &mut Engine,
    parts: &Partitions,
    refused: &mut HashSet<String>,
    now: chrono::DateTime<Utc>,
) -> Result<(), SchedulerError> {
    let mut granted_any = false;
    for (kind, want, limit) in engine.type_wants() {
        if refused.contains(&kind) {
            continue;
        }
        let (granted, others) = parts.take_type_places(&kind, want, limit).await?;
        tracing::debug!(%kind, want, granted, others, "Places of a limited type asked for");
        engine.grant_type_places(&kind, granted, others);
        granted_any |= granted > 0;
        if granted < want {
            refused.insert(kind);
        }
    }
    if granted_any {
        engine.dispatch(now);
    }
    engine.sync_type_places();
    Ok(())
}

/// Acks the batch: one multiple-ack per channel, up to its last tag; the
/// requests one by one while some wait unacked for room in the budget
/// (`none_waiting` false).
async fn ack(ctx: &Ctx<'_>, tags: Tags, none_waiting: bool) -> Result<(), SchedulerError> {
    let options = BasicAckOptions {
        multiple: none_waiting,
    };
    let requests: Vec<u64> = if none_waiting {
        tags.request.iter().max().copied().into_iter().collect()
    } else {
        tags.request
    };
    for tag in requests {
        ctx.requests_ch
            .basic_ack(tag, options)
            .await
            .map_err(warren_shared::Error::amqp("basic.ack"))?;
    }
    let owned_acks = ctx.owned_ch.iter().zip(tags.owned);
    for (ch, tag) in [
        (ctx.control_ch, tags.control),
        (ctx.results_ch, tags.result),
    ]
    .into_iter()
    .chain(owned_acks)
    {
        if let Some(tag) = tag {
            ch.basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(warren_shared::Error::amqp("basic.ack"))?;
        }
    }
    Ok(())
}

//! The scheduler's I/O loop: consume, batch, commit, publish, ack.
//!
//! Deliveries from the requests and results queues arrive on one channel.
//! The loop takes whatever has arrived (up to `max_batch`), applies it to
//! the [`Engine`], dispatches what became ready, commits the batch's ops and
//! outbox rows in one transaction, publishes the outbox with confirms (all
//! in flight at once), acks the batch's deliveries with one multiple-ack per
//! channel, and finally deletes the published outbox rows. A crash at any
//! point leaves either an unacked delivery (redelivered, and idempotent) or
//! a committed outbox row (republished at start).

use crate::{
    batch::{Known, Op, OutKind, OutMsg, ReplyTo},
    config::SchedulerConfig,
    http,
    metrics::Metrics,
    registry::{self, SharedRegistry},
    state::{Engine, TypeLimits},
    store::{Balance, Store, StoreError, postgres::BALANCE_EVERY},
    validate::{self, Rejected},
};
use chrono::Utc;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use serde::Deserialize;
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warren_shared::{
    Topology, amqp,
    backoff::Backoff,
    session::{Connections, Reconnect},
    topology::partition_of,
    wire::{
        ControlKind, ControlRequest, HEADER_FORWARDED, TYPE_CONTROL, TYPE_PROGRESS, TYPE_REPORT,
        TYPE_TASK, TYPE_WORKERS, TaskResult, WorkflowReport,
    },
};

/// How long deletions of published outbox rows wait for a batch to ride
/// along with before they are committed on their own.
const OUTBOX_FLUSH_IDLE: Duration = Duration::from_millis(100);

/// Why the scheduler stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    #[error(transparent)]
    Broker(#[from] warren_shared::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the consumer of `{queue}` ended: {reason}")]
    ConsumerEnded { queue: String, reason: String },
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A scheduler, ready to [`run`](Scheduler::run).
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    metrics: Arc<Metrics>,
    workers: SharedRegistry,
    /// The HTTP endpoint's address once it listens.
    http_addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
}

// Deliveries are the common case; boxing them to shrink the rare `Ended`
// would allocate once per message.
#[allow(clippy::large_enum_variant)]
enum Inbound {
    Request(Delivery),
    Result(Delivery),
    /// From the partition queue this scheduler owns that is consumed on
    /// `Ctx::owned_ch[i]`: a result, or a request forwarded by the
    /// scheduler that received it.
    Owned(usize, Delivery),
    Ended {
        queue: String,
        reason: String,
    },
}

/// Why a broker session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Shutdown.
    Stopped,
    /// The partitions this scheduler owns changed: give up this many (0
    /// when it took more), then start again with the new set.
    Rebalance(usize),
}

/// A message of a partition this scheduler does not own, on its way to
/// that partition's queue.
struct Forward {
    part: u16,
    properties: BasicProperties,
    body: Vec<u8>,
    request: bool,
}

/// What a request turned out to be, after parsing.
enum Request {
    Submit {
        verdict: Result<validate::ValidWorkflow, Rejected>,
        body: Vec<u8>,
        reply: Option<ReplyTo>,
    },
    Status {
        id: String,
        reply: ReplyTo,
    },
    Cancel {
        id: String,
        reply: ReplyTo,
    },
    Workers {
        reply: ReplyTo,
    },
    Invalid {
        reason: String,
        body: Vec<u8>,
        reply: Option<ReplyTo>,
    },
}

impl Request {
    fn lookup_id(&self) -> Option<&str> {
        match self {
            Request::Submit { verdict: Ok(v), .. } => Some(&v.id),
            Request::Submit {
                verdict: Err(r), ..
            } => Some(&r.id),
            Request::Status { id, .. } | Request::Cancel { id, .. } => Some(id),
            Request::Invalid { .. } | Request::Workers { .. } => None,
        }
    }
}

/// Lenient peek at a request body: only whether it has `control`.
#[derive(Deserialize)]
struct ControlPeek {
    #[serde(default)]
    control: Option<serde::de::IgnoredAny>,
}

fn reply_of(d: &Delivery) -> Option<ReplyTo> {
    let queue = d.properties.reply_to().as_ref()?.as_str();
    if queue.is_empty() {
        return None;
    }
    Some(ReplyTo {
        queue: queue.to_owned(),
        correlation_id: d
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_owned()),
    })
}

impl SchedulerError {
    /// True for faults a new broker session may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            SchedulerError::Broker(e) => e.is_transient(),
            SchedulerError::ConsumerEnded { .. } => true,
            SchedulerError::Store(_) | SchedulerError::Http { .. } => false,
        }
    }
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            metrics: Arc::new(Metrics::default()),
            workers: SharedRegistry::default(),
            http_addr: Arc::default(),
        }
    }

    /// The scheduler's counters; live while it runs.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The workers heard from in heartbeats.
    pub fn workers(&self) -> SharedRegistry {
        self.workers.clone()
    }

    /// Where the HTTP endpoint listens, once it does (filled by
    /// [`Scheduler::run`] when `http_addr` is configured).
    pub fn http_addr(&self) -> Arc<std::sync::OnceLock<std::net::SocketAddr>> {
        self.http_addr.clone()
    }

    /// Runs until `shutdown` is cancelled (returns `Ok`) or a fault that
    /// reconnecting cannot cure stops it (a store failure, a topology
    /// conflict). A lost broker connection is retried with capped
    /// exponential backoff; each new session resumes from the store exactly
    /// as a restarted scheduler would, so nothing of the old session is
    /// trusted (unacked deliveries come back, unconfirmed outbox messages
    /// are published again).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        // Readable at once (the HTTP endpoint of a standby serves the
        // store's workflows); committing waits for `lead` below.
        let store = Store::connect(&self.config.store, &self.config.amqp.namespace).await?;
        let (queries_tx, mut queries) = mpsc::channel(64);
        let http_stop = shutdown.child_token();
        let http = match self.config.http_addr {
            Some(addr) => {
                let (bound, join) = http::serve(
                    addr,
                    self.metrics.clone(),
                    self.workers.clone(),
                    store.clone(),
                    queries_tx,
                    http_stop.clone(),
                )
                .await
                .map_err(|e| SchedulerError::Http {
                    addr: addr.to_string(),
                    source: e,
                })?;
                let _ = self.http_addr.set(bound);
                Some(join)
            }
            None => None,
        };
        // Lead, run broker sessions; on PostgreSQL, a lost database
        // connection or leadership sends the scheduler back to standing by
        // (its memory is dropped; the next leader, maybe itself, reloads
        // the store), rather than ending the process.
        let mut store_backoff = Backoff::reconnect();
        let outcome = 'lead: loop {
            match store.lead(&shutdown).await {
                Ok(true) => {}
                Ok(false) => break Ok(()), // stopped while standing by
                Err(e) if store.can_lead_again(&e) => {
                    let delay = store_backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "Cannot reach the store to lead; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break Ok(()),
                        () = tokio::time::sleep(delay) => continue 'lead,
                    }
                }
                Err(e) => break Err(e.into()),
            }
            store_backoff.reset();
            self.metrics.active.store(1, Ordering::Relaxed);
            let mut reconnect = Reconnect::new("scheduler");
            let ran = loop {
                let mut connected = false;
                let error = match self
                    .session(
                        &store,
                        &shutdown,
                        &mut queries,
                        &mut connected,
                        reconnect.failures(),
                    )
                    .await
                {
                    Ok(End::Stopped) => break Ok(()),
                    Ok(End::Rebalance(n)) => {
                        // Nothing more is committed for the partitions
                        // given up: the session that worked on them ended.
                        if let Err(e) = store.release(n).await {
                            break Err(e.into());
                        }
                        reconnect.reset();
                        continue;
                    }
                    Err(e) if e.is_transient() => e,
                    Err(e) => break Err(e),
                };
                Metrics::add(&self.metrics.reconnects, 1);
                if !reconnect.wait(&error, connected, &shutdown).await {
                    break Ok(());
                }
            };
            self.metrics.active.store(0, Ordering::Relaxed);
            match ran {
                Err(SchedulerError::Store(e))
                    if store.can_lead_again(&e) && !shutdown.is_cancelled() =>
                {
                    tracing::warn!(error = %e, "Lost the store or its leadership; standing by again");
                    Metrics::add(&self.metrics.reconnects, 1);
                    store.step_down().await;
                }
                other => break other,
            }
        };
        http_stop.cancel();
        if let Some(join) = http {
            let _ = join.await;
        }
        // Release the store's lock before returning, so that a successor in
        // this process can open it at once.
        store.close().await;
        outcome
    }

    /// One broker session: connect, resume from the store, run the loop.
    async fn session(
        &self,
        store: &Store,
        shutdown: &CancellationToken,
        queries: &mut mpsc::Receiver<http::Query>,
        connected: &mut bool,
        failures: u32,
    ) -> Result<End, SchedulerError> {
        let cfg = &self.config;
        let conns = Connections::open(
            &cfg.amqp,
            &format!("warren-scheduler {}", cfg.amqp.namespace),
        )
        .await?;
        let outcome = self
            .run_on(
                store,
                shutdown,
                queries,
                (&conns.consume, &conns.publish),
                connected,
                failures,
            )
            .await;
        // Unacked deliveries return to their queues when the channels close.
        conns.close("scheduler stopping").await;
        outcome
    }

    async fn run_on(
        &self,
        store: &Store,
        shutdown: &CancellationToken,
        queries: &mut mpsc::Receiver<http::Query>,
        (consume_conn, publish_conn): (&Connection, &Connection),
        connected: &mut bool,
        failures: u32,
    ) -> Result<End, SchedulerError> {
        let cfg = &self.config;
        let topology = cfg.amqp.topology();
        let recovered = store.recover().await?;
        let partitions = store.partitions();
        let owned = store.owned();
        if owned.is_empty() {
            return Err(StoreError::Fenced.into());
        }
        let mut owns = vec![false; usize::from(partitions)];
        for &p in &owned {
            owns[usize::from(p)] = true;
        }
        let partitioned = partitions > 1;
        tracing::info!(
            store = %cfg.store,
            running = recovered.running.len(),
            outbox = recovered.outbox.len(),
            partitions = ?partitioned.then_some(&owned),
            "State store opened"
        );
        let setup = publish_conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        topology.declare(&setup).await?;
        if partitioned {
            topology
                .declare_partition_queues(&setup, partitions)
                .await?;
        }
        registry::listen(consume_conn, &topology, self.workers.clone()).await?;
        let mut publisher = Publisher {
            channel: amqp::confirm_channel(publish_conn).await?,
            setup,
            topology: topology.clone(),
            declared: HashSet::new(),
            partitioned,
        };

        let mut engine = Engine::new(
            topology.clone(),
            cfg.dispatch_window,
            cfg.lease_grace.as_millis() as u64,
            recovered.next_outbox_seq,
            recovered.next_workflow_seq,
            self.metrics.clone(),
        );
        engine.set_dispatch_order(cfg.dispatch_order);
        engine.set_partitions(partitions, &owned);
        engine.set_type_limits(TypeLimits::new(cfg.type_limits.iter().cloned()));
        for wf in recovered.running {
            engine.restore(wf).map_err(StoreError::from)?;
        }
        if partitioned {
            engine.set_type_places(&recovered.type_places);
        }
        // Messages committed but maybe never published: publish them again.
        // Consumers handle duplicates (task ids are per attempt, results are
        // idempotent, reports are final).
        publisher
            .publish_all(&recovered.outbox, &self.metrics)
            .await?;
        for (seq, _) in &recovered.outbox {
            engine.push_op(Op::OutboxDone(*seq));
        }

        let (tx, mut rx) = mpsc::channel::<Inbound>(
            cfg.requests_prefetch as usize
                + cfg.results_prefetch as usize * (1 + owned.len() * usize::from(partitioned))
                + 16,
        );
        // The queues of the partitions this scheduler owns, each on a
        // channel of its own: delivery tags are per channel, and a
        // multiple ack is only right when one consumer's deliveries arrive
        // in order.
        let mut owned_ch = Vec::new();
        if partitioned {
            for (i, &p) in owned.iter().enumerate() {
                let queue = topology.partition_queue(p);
                owned_ch.push(
                    start_consumer(
                        consume_conn,
                        &queue,
                        cfg.results_prefetch,
                        tx.clone(),
                        move |d| Inbound::Owned(i, d),
                    )
                    .await?,
                );
            }
        }
        let requests_ch = start_consumer(
            consume_conn,
            &topology.workflows(),
            cfg.requests_prefetch,
            tx.clone(),
            Inbound::Request,
        )
        .await?;
        let results_ch = start_consumer(
            consume_conn,
            &topology.results(),
            cfg.results_prefetch,
            tx,
            Inbound::Result,
        )
        .await?;
        *connected = true;
        if failures > 0 {
            tracing::info!(attempts = failures, "Reconnected to the broker");
        }
        tracing::info!(
            namespace = topology.namespace(),
            active = engine.active_workflows(),
            "Scheduler running"
        );

        let mut batch: Vec<Inbound> = Vec::with_capacity(cfg.max_batch);
        self.metrics.broker_connected.store(1, Ordering::Relaxed);
        let mut next_balance = tokio::time::Instant::now() + BALANCE_EVERY;
        let ctx = Ctx {
            requests_ch: &requests_ch,
            results_ch: &results_ch,
            owned_ch: &owned_ch,
            owns: &owns,
            partitions,
            partitioned,
        };
        // Limited types the store had no place for: asked again at the
        // next balance tick, not at every batch.
        let mut refused: HashSet<String> = HashSet::new();
        // The first turn dispatches what the store gave back ready, without
        // waiting for a message to arrive.
        let mut kick = true;
        let outcome = loop {
            self.gauges(&engine);
            let due = match (engine.next_due_ms(), engine.next_progress_ms()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait_due = due.map(|due| {
                Duration::from_millis((due - Utc::now().timestamp_millis()).max(0) as u64)
            });
            // Deletions of published outbox rows ride along with the next
            // batch; after a quiet spell they are flushed on their own.
            let flush_in = engine.has_ops().then_some(OUTBOX_FLUSH_IDLE);
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(End::Stopped),
                () = tokio::time::sleep_until(next_balance), if partitioned => {
                    next_balance = tokio::time::Instant::now() + BALANCE_EVERY;
                    match store.balance().await {
                        Ok(Balance::Unchanged) => {
                            if !cfg.type_limits.is_empty() {
                                match store.type_waiters().await {
                                    Ok(waiting) => engine.set_type_waiters(&waiting),
                                    Err(e) => break Err(e.into()),
                                }
                            }
                            if !engine.has_parked() {
                                continue;
                            }
                            refused.clear();
                            // A batch of nothing: asks for places again,
                            // or uses a share raised since.
                            None
                        }
                        Ok(Balance::Acquired(n)) => {
                            tracing::info!(partitions = n, "Took partitions over; loading them");
                            break Ok(End::Rebalance(0));
                        }
                        Ok(Balance::Release(n)) => {
                            tracing::info!(partitions = n, "Another scheduler joined; handing partitions over");
                            break Ok(End::Rebalance(n));
                        }
                        Err(e) => break Err(e.into()),
                    }
                }
                msg = rx.recv() => msg,
                Some(q) = queries.recv() => {
                    match q {
                        http::Query::Report { id, answer } => {
                            let _ = answer.send(engine.report(&id));
                        }
                    }
                    continue;
                }
                () = sleep_opt(wait_due) => None,
                () = std::future::ready(()), if kick => {
                    kick = false;
                    None
                }
                () = sleep_opt(flush_in) => {
                    let (ops, _) = engine.take_batch();
                    store.commit_relaxed(ops).await?;
                    continue;
                }
            };
            batch.extend(first);
            while batch.len() < cfg.max_batch {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let step = self
                .step(
                    &mut engine,
                    store,
                    &mut publisher,
                    &ctx,
                    &mut refused,
                    &mut batch,
                )
                .await;
            if let Err(e) = step {
                break Err(e);
            }
        };
        self.metrics.broker_connected.store(0, Ordering::Relaxed);
        if outcome.is_ok() && engine.has_ops() {
            let (ops, _) = engine.take_batch();
            store.commit(ops).await?;
        }
        if outcome.as_ref().is_ok_and(|e| *e == End::Stopped) {
            tracing::info!("Scheduler stopped");
        }
        outcome
    }

    /// Publishes the engine's gauges to the metrics.
    fn gauges(&self, engine: &Engine) {
        self.metrics
            .workflows_running
            .store(engine.active_workflows() as u64, Ordering::Relaxed);
        *self.metrics.in_flight.lock().expect("not poisoned") = engine.in_flight_by_queue();
        *self.metrics.types.lock().expect("not poisoned") = engine.type_usage();
    }

    async fn step(
        &self,
        engine: &mut Engine,
        store: &Store,
        publisher: &mut Publisher,
        ctx: &Ctx<'_>,
        refused: &mut HashSet<String>,
        batch: &mut Vec<Inbound>,
    ) -> Result<(), SchedulerError> {
        let now = Utc::now();
        let mut last_request_tag = None;
        let mut last_result_tag = None;
        let mut last_owned_tags: Vec<Option<u64>> = vec![None; ctx.owned_ch.len()];
        let mut forwards: Vec<Forward> = Vec::new();

        // Parse requests first, so the ids the engine does not hold can be
        // looked up in the store with one call. What belongs to a partition
        // another scheduler owns is forwarded to that partition's queue.
        let mut items = Vec::with_capacity(batch.len());
        Metrics::add(&self.metrics.messages_received, batch.len() as u64);
        for inbound in batch.drain(..) {
            let (d, request) = match inbound {
                Inbound::Request(d) => {
                    last_request_tag = Some(d.delivery_tag);
                    (d, true)
                }
                Inbound::Result(d) => {
                    last_result_tag = Some(d.delivery_tag);
                    (d, false)
                }
                Inbound::Owned(i, d) => {
                    last_owned_tags[i] = Some(d.delivery_tag);
                    let forwarded = d
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| h.inner().get(HEADER_FORWARDED).cloned())
                        .is_some();
                    (d, forwarded)
                }
                Inbound::Ended { queue, reason } => {
                    return Err(SchedulerError::ConsumerEnded { queue, reason });
                }
            };
            if request {
                let copy = ctx
                    .partitioned
                    .then(|| (d.properties.clone(), d.data.clone()));
                let parsed = self.parse_request(d, ctx);
                match (copy, parsed.lookup_id().map(|id| ctx.part_of(id))) {
                    (Some((properties, body)), Some(part)) if !ctx.owns(part) => {
                        forwards.push(Forward {
                            part,
                            properties,
                            body,
                            request: true,
                        });
                    }
                    _ => items.push(Ok(parsed)),
                }
            } else {
                let parsed = serde_json::from_slice::<TaskResult>(&d.data);
                match parsed {
                    Ok(r) if ctx.partitioned && !ctx.owns(ctx.part_of(&r.workflow_id)) => {
                        forwards.push(Forward {
                            part: ctx.part_of(&r.workflow_id),
                            properties: d.properties,
                            body: d.data,
                            request: false,
                        });
                    }
                    parsed => items.push(Err((parsed, d.data))),
                }
            }
        }
        let lookup: Vec<String> = items
            .iter()
            .filter_map(|i| i.as_ref().ok()?.lookup_id())
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

        for item in items {
            match item {
                Ok(request) => self.apply_request(engine, request, &mut known, now),
                Err((parsed, body)) => match parsed {
                    Ok(result) => engine.on_result(result, now),
                    Err(e) => {
                        tracing::warn!(error = %e, "Undecodable result dead-lettered");
                        engine.dead_letter(
                            body,
                            &publisher.topology.results(),
                            &format!("undecodable result: {e}"),
                        );
                    }
                },
            }
        }
        engine.fire_due(now.timestamp_millis());
        engine.dispatch(now);
        if ctx.partitioned {
            // Limits per task type are counted in the store across the
            // schedulers: a type at this scheduler's places asks for more.
            let mut granted_any = false;
            for (kind, want, limit) in engine.type_wants() {
                if refused.contains(&kind) {
                    continue;
                }
                let (granted, others) = store.take_type_places(&kind, want, limit).await?;
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
        }
        engine.emit_progress(now);

        let (ops, msgs) = engine.take_batch();
        if !ops.is_empty() {
            store.commit(ops).await?;
            Metrics::add(&self.metrics.batches_committed, 1);
        }
        publisher.publish_all(&msgs, &self.metrics).await?;
        if !forwards.is_empty() {
            Metrics::add(&self.metrics.forwarded, forwards.len() as u64);
            publisher.forward(&forwards).await?;
        }
        let owned_acks = ctx.owned_ch.iter().zip(last_owned_tags);
        for (ch, tag) in [
            (ctx.requests_ch, last_request_tag),
            (ctx.results_ch, last_result_tag),
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
        for (seq, m) in &msgs {
            if m.kind != OutKind::Progress {
                engine.push_op(Op::OutboxDone(*seq));
            }
        }
        Ok(())
    }

    fn parse_request(&self, d: Delivery, ctx: &Ctx<'_>) -> Request {
        let reply = reply_of(&d);
        let limits = &self.config.limits;
        let body = d.data;
        if body.len() <= limits.max_body_bytes
            && body.windows(9).any(|w| w == b"\"control\"")
            && serde_json::from_slice::<ControlPeek>(&body).is_ok_and(|p| p.control.is_some())
        {
            return match (serde_json::from_slice::<ControlRequest>(&body), reply) {
                (Ok(c), Some(reply)) => match c.control {
                    ControlKind::Status => Request::Status {
                        id: c.workflow_id,
                        reply,
                    },
                    ControlKind::Cancel => Request::Cancel {
                        id: c.workflow_id,
                        reply,
                    },
                    ControlKind::Workers => Request::Workers { reply },
                },
                (Ok(_), None) => Request::Invalid {
                    reason: "control request without reply_to: there is nowhere to answer".into(),
                    body,
                    reply: None,
                },
                (Err(e), reply) => Request::Invalid {
                    reason: format!("invalid control request: {e}"),
                    body,
                    reply,
                },
            };
        }
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        // A generated id is drawn until it falls in a partition this
        // scheduler owns, so that the request needs no forwarding.
        let verdict = validate::validate(&body, message_id.as_deref(), limits, || {
            loop {
                let id = uuid::Uuid::new_v4().to_string();
                if ctx.owns(ctx.part_of(&id)) {
                    break id;
                }
            }
        });
        Request::Submit {
            verdict,
            body,
            reply,
        }
    }

    fn apply_request(
        &self,
        engine: &mut Engine,
        request: Request,
        known: &mut HashMap<String, Known>,
        now: chrono::DateTime<Utc>,
    ) {
        match request {
            Request::Submit {
                verdict,
                body,
                reply,
            } => {
                let id = match &verdict {
                    Ok(v) => v.id.clone(),
                    Err(r) => r.id.clone(),
                };
                if engine.is_active(&id) {
                    tracing::info!(workflow = %id, "Duplicate submission of a running workflow");
                    match reply {
                        Some(to) => engine.add_waiter(&id, to),
                        None => engine.note_duplicate(),
                    }
                    return;
                }
                if let Some(k) = known.get(&id) {
                    tracing::info!(workflow = %id, status = %k.status, "Duplicate submission of an ended workflow");
                    engine.note_duplicate();
                    if let (Some(to), Some(report)) = (reply, &k.report) {
                        engine.reply_with(&to, report);
                    }
                    return;
                }
                match verdict {
                    Ok(v) => {
                        tracing::info!(workflow = %v.id, tasks = v.tasks.len(), priority = v.priority, "Workflow accepted");
                        engine.accept(v, Arc::from(body), reply, now);
                    }
                    Err(r) => {
                        tracing::info!(workflow = %r.id, problems = r.errors.len(), "Workflow rejected");
                        // Later duplicates in this batch see it as ended.
                        let report = WorkflowReport {
                            errors: r.errors.clone(),
                            status: warren_shared::wire::WorkflowStatus::Rejected,
                            ..WorkflowReport::not_found(&r.id)
                        };
                        known.insert(
                            r.id.clone(),
                            Known {
                                status: "rejected".into(),
                                report: serde_json::to_string(&report).ok(),
                            },
                        );
                        engine.reject(r, reply, now);
                    }
                }
            }
            Request::Cancel { id, reply } => match engine.cancel(&id, now) {
                Some(report) => {
                    tracing::info!(workflow = %id, "Workflow cancelled");
                    // Later requests in this batch see it as ended.
                    let json = serde_json::to_string(&report).ok();
                    known.insert(
                        id,
                        Known {
                            status: "cancelled".into(),
                            report: json,
                        },
                    );
                    engine.reply_report(&reply, &report);
                }
                // Not running (ended, or unknown): answer with what is known.
                None => self.apply_request(engine, Request::Status { id, reply }, known, now),
            },
            Request::Workers { reply } => {
                let report = self.workers.lock().expect("not poisoned").report(now);
                engine.reply_workers(&reply, &report);
            }
            Request::Status { id, reply } => {
                if let Some(report) = engine.report(&id) {
                    engine.reply_report(&reply, &report);
                } else if let Some(Known {
                    report: Some(report),
                    ..
                }) = known.get(&id)
                {
                    engine.reply_with(&reply, report);
                } else {
                    engine.reply_report(&reply, &WorkflowReport::not_found(&id));
                }
            }
            Request::Invalid {
                reason,
                body,
                reply,
            } => {
                tracing::warn!(%reason, "Invalid control request dead-lettered");
                if let Some(to) = reply {
                    let report = WorkflowReport {
                        status: warren_shared::wire::WorkflowStatus::Rejected,
                        errors: vec![warren_shared::wire::Rejection {
                            code: "invalid_control".into(),
                            message: reason.clone(),
                            task: None,
                        }],
                        ..WorkflowReport::not_found("")
                    };
                    engine.reply_report(&to, &report);
                }
                engine.dead_letter(body, &self.config.amqp.namespace, &reason);
            }
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn start_consumer(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    tx: mpsc::Sender<Inbound>,
    wrap: impl Fn(Delivery) -> Inbound + Send + 'static,
) -> Result<Channel, SchedulerError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(warren_shared::Error::amqp("channel.open"))?;
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(warren_shared::Error::amqp("basic.qos"))?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            ShortString::from(format!("warren-scheduler:{queue}")),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(warren_shared::Error::amqp("basic.consume"))?;
    let queue = queue.to_owned();
    tokio::spawn(async move {
        let reason = loop {
            match consumer.next().await {
                Some(Ok(d)) => {
                    if tx.send(wrap(d)).await.is_err() {
                        return; // the loop has stopped
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the broker cancelled the consumer or closed the channel".to_owned(),
            }
        };
        let _ = tx.send(Inbound::Ended { queue, reason }).await;
    });
    Ok(ch)
}

/// What a batch needs to know of the session: its channels and which
/// partitions it owns.
struct Ctx<'a> {
    requests_ch: &'a Channel,
    results_ch: &'a Channel,
    /// Consume the owned partitions' queues, one each (partitioned stores
    /// only).
    owned_ch: &'a [Channel],
    owns: &'a [bool],
    partitions: u16,
    partitioned: bool,
}

impl Ctx<'_> {
    fn part_of(&self, workflow_id: &str) -> u16 {
        partition_of(workflow_id, self.partitions)
    }

    fn owns(&self, part: u16) -> bool {
        self.owns.get(usize::from(part)).copied().unwrap_or(false)
    }
}

/// Publishes outbox messages with confirms.
struct Publisher {
    channel: Channel,
    /// Channel for declarations: a declaration error closes its channel,
    /// and must not take the publishing channel with it.
    setup: Channel,
    topology: Topology,
    /// Task queues declared by this process: a task is never published to
    /// a queue that does not exist.
    declared: HashSet<String>,
    /// Task messages carry their partition's queue as `reply_to`.
    partitioned: bool,
}

impl Publisher {
    fn properties(&self, m: &OutMsg) -> BasicProperties {
        let mut p = amqp::json_properties();
        if self.partitioned && m.kind == OutKind::Task {
            p = p.with_reply_to(self.topology.partition_queue(m.part).into());
        }
        if !m.headers.is_empty() {
            let mut h = p.headers().clone().unwrap_or_default();
            for (k, v) in &m.headers {
                h.insert(
                    k.as_str().into(),
                    AMQPValue::LongString(LongString::from(v.as_str())),
                );
            }
            p = p.with_headers(h);
        }
        if let Some(id) = &m.message_id {
            p = p.with_message_id(id.as_str().into());
        }
        if let Some(c) = &m.correlation_id {
            p = p.with_correlation_id(c.as_str().into());
        }
        if let Some(prio) = m.priority {
            p = p.with_priority(prio);
        }
        match m.kind {
            OutKind::Task => p.with_type(TYPE_TASK.into()),
            OutKind::Reply | OutKind::Event => p.with_type(TYPE_REPORT.into()),
            OutKind::WorkersReply => p.with_type(TYPE_WORKERS.into()),
            OutKind::Progress => p.with_type(TYPE_PROGRESS.into()),
            OutKind::Control => p.with_type(TYPE_CONTROL.into()),
            OutKind::Dead => p,
        }
    }

    /// Forwards messages to the queues of their partitions, with confirms.
    /// A forwarded request is marked with [`HEADER_FORWARDED`].
    async fn forward(&mut self, forwards: &[Forward]) -> Result<(), SchedulerError> {
        let mut pending = Vec::with_capacity(forwards.len());
        for f in forwards {
            let queue = self.topology.partition_queue(f.part);
            let mut properties = f.properties.clone();
            if f.request {
                let mut h = properties.headers().clone().unwrap_or_default();
                h.insert(
                    HEADER_FORWARDED.into(),
                    AMQPValue::LongString("request".into()),
                );
                properties = properties.with_headers(h);
            }
            let confirm =
                amqp::publish(&self.channel, "", &queue, true, &f.body, properties).await?;
            pending.push((confirm, queue));
        }
        for (confirm, queue) in pending {
            amqp::confirmed(confirm, "", &queue).await?;
        }
        Ok(())
    }

    async fn publish_all(
        &mut self,
        msgs: &[(u64, Arc<OutMsg>)],
        metrics: &Metrics,
    ) -> Result<(), SchedulerError> {
        Metrics::add(&metrics.messages_published, msgs.len() as u64);
        let returned = self.publish_once(msgs.iter().map(|(_, m)| m)).await?;
        if returned.is_empty() {
            return Ok(());
        }
        // A task queue deleted behind our back: declare it again and resend.
        for m in &returned {
            self.declared.remove(&m.routing_key);
        }
        let again = self.publish_once(returned.iter()).await?;
        match again.first() {
            None => Ok(()),
            Some(m) => Err(warren_shared::Error::Unroutable {
                exchange: m.exchange.clone(),
                routing_key: m.routing_key.clone(),
            }
            .into()),
        }
    }

    /// Publishes every message, then awaits every confirm. Returns the task
    /// messages that came back unroutable.
    async fn publish_once<'a>(
        &mut self,
        msgs: impl Iterator<Item = &'a Arc<OutMsg>>,
    ) -> Result<Vec<Arc<OutMsg>>, SchedulerError> {
        let mut pending = Vec::new();
        for m in msgs {
            if m.kind == OutKind::Task && !self.declared.contains(&m.routing_key) {
                self.topology
                    .declare_task_queue(&self.setup, &m.routing_key)
                    .await?;
                self.declared.insert(m.routing_key.clone());
            }
            let confirm = amqp::publish(
                &self.channel,
                &m.exchange,
                &m.routing_key,
                // Events and notices have no queue unless someone listens.
                !matches!(
                    m.kind,
                    OutKind::Event | OutKind::Progress | OutKind::Control
                ),
                &m.body,
                self.properties(m),
            )
            .await?;
            pending.push((confirm, m));
        }
        let mut returned = Vec::new();
        for (confirm, m) in pending {
            match confirm
                .await
                .map_err(warren_shared::Error::amqp("publisher confirm"))?
            {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => match m.kind {
                    OutKind::Reply | OutKind::WorkersReply => tracing::warn!(
                        reply_to = %m.routing_key,
                        "Reply queue no longer exists; the outcome is still on the events exchange"
                    ),
                    OutKind::Task => returned.push(m.clone()),
                    // Not mandatory: never returned.
                    OutKind::Event | OutKind::Progress | OutKind::Control => {}
                    OutKind::Dead => tracing::error!(
                        exchange = %m.exchange,
                        "Message returned unroutable; is the dead-letter queue deleted?"
                    ),
                },
                Confirmation::Nack(_) => {
                    return Err(warren_shared::Error::PublishNacked {
                        exchange: m.exchange.clone(),
                        routing_key: m.routing_key.clone(),
                    }
                    .into());
                }
            }
        }
        Ok(returned)
    }
}

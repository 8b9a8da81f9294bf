//! One broker session of a leading scheduler: connect, recover the owned
//! partitions from the store, declare, republish the outbox, consume, then
//! the loop, until shutdown, a fault, or a change of the owned partitions.
//!
//! Each turn of the loop first hands the engine the task queues'
//! capacities if the workers' heartbeats changed them (`windows`; a
//! window that grew over ready tasks makes the turn dispatch), then waits
//! for the first of: shutdown, the balance
//! tick (partitioned stores: the owned partitions may change, which ends
//! the session at this quiet point, between batches), a change of the
//! capacities, a delivery, an HTTP
//! query about a running workflow, the next due timer or progress event,
//! and the idle flush of published outbox rows. A delivery or timer makes
//! a batch of whatever else has arrived (see `step`); so does a cancel
//! from the HTTP endpoint, applied in that batch as a `cancel` control
//! request is and answered once the batch is committed and published.

use crate::{
    batch::{Op, OutMsg, Recovered},
    engine::{Engine, EngineConfig},
    http,
    store::{Balance, Store, StoreError, postgres::BALANCE_EVERY},
    workers,
};
use chrono::Utc;
use lapin::Connection;
use std::{
    collections::HashSet,
    sync::{Arc, OnceLock, atomic::Ordering},
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use warren_shared::{Topology, amqp, session::Connections, topology::PARTITIONS};

use super::{
    Scheduler, SchedulerError,
    consume::{self, Consumers, Inbound},
    ownership::Ownership,
    publisher::Publisher,
    request::{Reply, Request},
    step::{Ctx, LoopState},
    waiting::Waiting,
    windows::Feed,
};

/// How long deletions of published outbox rows wait for a batch to ride
/// along with before they are committed on their own.
const OUTBOX_FLUSH_IDLE: Duration = Duration::from_millis(100);

/// Why a broker session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Shutdown.
    Stopped,
    /// The partitions this scheduler owns changed: give up this many (0
    /// when it took more), then start again with the new set.
    Rebalance(usize),
}

/// What a session gets from the scheduler around it.
pub(super) struct SessionContext<'a> {
    pub(super) store: &'a Store,
    pub(super) shutdown: &'a CancellationToken,
    /// The HTTP endpoint's questions about running workflows, which only
    /// the loop (holding the engine) can answer.
    pub(super) queries: &'a mut mpsc::Receiver<http::Query>,
}

/// What woke the loop.
// A delivery is the common case (see `Inbound`).
#[allow(clippy::large_enum_variant)]
enum Wake {
    Stopped,
    Balance,
    /// A delivery, or `None` when every consumer has gone.
    Inbound(Option<Inbound>),
    Query(http::Query),
    /// A timer or a progress event is due, or the first turn.
    Due,
    /// Published outbox rows waited long enough for a batch.
    Flush,
    /// The workers' capacities may have changed (`windows`).
    Capacity,
}

/// What the balance tick found.
enum Balanced {
    /// Nothing to do.
    Quiet,
    /// Nothing changed, but limited types wait for places (a batch of
    /// nothing asks the store again), or a queue or type was resumed (it
    /// dispatches what was held).
    Ask,
    /// The owned partitions changed: the session ends.
    Changed(End),
}

impl Scheduler {
    /// One broker session: connect, resume from the store, run the loop.
    pub(super) async fn session(
        &self,
        cx: &mut SessionContext<'_>,
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
            .run_on(cx, (&conns.consume, &conns.publish), connected, failures)
            .await;
        // Unacked deliveries return to their queues when the channels close.
        conns.close("scheduler stopping").await;
        outcome
    }

    /// The session on its two connections: recover, declare, republish,
    /// consume, loop.
    async fn run_on(
        &self,
        cx: &mut SessionContext<'_>,
        (consume_conn, publish_conn): (&Connection, &Connection),
        connected: &mut bool,
        failures: u32,
    ) -> Result<End, SchedulerError> {
        let cfg = &self.config;
        let topology = cfg.amqp.topology();
        let mut recovered = cx.store.recover().await?;
        self.watchdog.beat();
        let (partitions, owned) = match cx.store.partitioned() {
            Some(parts) => (PARTITIONS, parts.owned()),
            None => (1, vec![0]),
        };
        if owned.is_empty() {
            return Err(StoreError::Fenced.into());
        }
        let ownership = Ownership::new(partitions, &owned);
        let partitioned = ownership.partitioned;
        tracing::info!(
            store = %cfg.store,
            running = recovered.running.len(),
            outbox = recovered.outbox.len(),
            partitions = ?partitioned.then_some(&owned),
            "State store opened"
        );
        let mut publisher = self
            .declare(consume_conn, publish_conn, &topology, &ownership)
            .await?;
        let mut engine = self.load_engine(&topology, &mut recovered, partitions, &owned)?;
        // Before the first dispatch: what is paused stays held.
        engine.set_pauses(&cx.store.pauses().await?);
        self.republish(
            &mut engine,
            (&mut publisher, publish_conn),
            &recovered.outbox,
        )
        .await?;
        let consumers = consume::start(consume_conn, cfg, &topology, &owned, partitioned).await?;
        *connected = true;
        if failures > 0 {
            tracing::info!(attempts = failures, "Reconnected to the broker");
        }
        tracing::info!(
            namespace = topology.namespace(),
            active = engine.active_workflows(),
            "Scheduler running"
        );
        let state = LoopState {
            engine,
            publisher,
            refused: HashSet::new(),
            waiting: Waiting::default(),
            http: Vec::new(),
        };
        self.serve(cx, state, (consumers, publish_conn), &ownership)
            .await
    }

    /// Declares the topology (and the partitions' queues), listens to the
    /// workers' heartbeats, and opens the publisher.
    async fn declare(
        &self,
        consume_conn: &Connection,
        publish_conn: &Connection,
        topology: &Topology,
        ownership: &Ownership,
    ) -> Result<Publisher, SchedulerError> {
        let partitioned = ownership.partitioned;
        let setup = publish_conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        topology.declare(&setup).await?;
        if partitioned {
            topology
                .declare_partition_queues(&setup, ownership.partitions())
                .await?;
        }
        workers::listen(consume_conn, topology, self.workers.clone()).await?;
        Ok(Publisher::new(
            (amqp::confirm_channel(publish_conn).await?, setup),
            topology.clone(),
            partitioned,
            self.config.bounds.max_message_bytes,
        ))
    }

    /// A new engine holding the workflows the store recovered of the owned
    /// partitions (taken out of `recovered`).
    fn load_engine(
        &self,
        topology: &Topology,
        recovered: &mut Recovered,
        partitions: u16,
        owned: &[u16],
    ) -> Result<Engine, SchedulerError> {
        let cfg = &self.config;
        let mut engine = Engine::new(
            EngineConfig {
                topology: topology.clone(),
                window: cfg.dispatch_window.unwrap_or(crate::engine::DEFAULT_WINDOW),
                adapt_window: cfg.dispatch_window.is_none(),
                lease_grace: cfg.lease_grace,
                next_outbox_seq: recovered.next_outbox_seq,
                next_workflow_seq: recovered.next_workflow_seq,
                dispatch_order: cfg.dispatch_order,
                type_limits: cfg.type_limits.clone(),
                partitions,
                owned: owned.to_vec(),
                bounds: cfg.bounds.clone(),
                attempt_key: recovered.attempt_key.clone(),
                retention: cfg.retention,
            },
            self.metrics.engine.clone(),
        );
        for wf in recovered.scheduled.drain(..) {
            engine.restore_scheduled(wf);
        }
        for wf in recovered.running.drain(..) {
            engine.restore(wf).map_err(StoreError::from)?;
        }
        for wf in recovered.queued.drain(..) {
            engine.restore_queued(wf);
        }
        let now = Utc::now();
        for row in recovered.schedules.drain(..) {
            engine.restore_schedule(row, now);
        }
        if partitions > 1 {
            engine.set_type_places(&recovered.type_places);
        }
        Ok(engine)
    }

    /// Messages committed but maybe never published: publish them again,
    /// and delete their outbox rows with the next commit. Consumers handle
    /// duplicates (task ids are per attempt, results are idempotent,
    /// reports are final). One the broker refuses for good ends what it
    /// belonged to (committed and published by the first batch).
    async fn republish(
        &self,
        engine: &mut Engine,
        (publisher, conn): (&mut Publisher, &Connection),
        outbox: &[(u64, Arc<OutMsg>)],
    ) -> Result<(), SchedulerError> {
        let refused = publisher.publish_all(conn, outbox, &self.metrics).await?;
        for (seq, _) in outbox {
            engine.push_op(Op::OutboxDone(*seq));
        }
        let now = Utc::now();
        for r in refused {
            engine.message_refused(&r.msg, &r.reason, now);
        }
        Ok(())
    }

    /// The loop, from connected to the end of the session. A failed flush
    /// of outbox deletions returns at once (as the `?` says), without the
    /// wind-down.
    async fn serve(
        &self,
        cx: &mut SessionContext<'_>,
        mut state: LoopState,
        (consumers, publish_conn): (Consumers, &Connection),
        ownership: &Ownership,
    ) -> Result<End, SchedulerError> {
        let store = cx.store;
        let Consumers {
            mut rx,
            requests_ch,
            control_ch,
            results_ch,
            owned_ch,
        } = consumers;
        let mut batch: Vec<Inbound> = Vec::with_capacity(self.config.max_batch);
        self.metrics.broker_connected.store(1, Ordering::Relaxed);
        // The balance tick runs only when partitioned.
        let mut next_balance = ownership
            .partitioned
            .then(|| tokio::time::Instant::now() + BALANCE_EVERY);
        let ctx = Ctx {
            requests_ch: &requests_ch,
            control_ch: &control_ch,
            results_ch: &results_ch,
            owned_ch: &owned_ch,
            owned: ownership,
            publish_conn,
        };
        // The first turn dispatches what the store gave back ready, without
        // waiting for a message to arrive.
        let mut kick = true;
        let census_ch = publish_conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        let topology = self.config.amqp.topology();
        let mut capacity = Feed::counting(self.workers.clone(), census_ch, topology);
        let outcome = loop {
            // Each turn tells the watchdog the loop is alive (a partitioned
            // scheduler's turns come at least every balance tick).
            self.watchdog.beat();
            // A window that grew dispatches without waiting for a result.
            kick |= capacity.update(&mut state.engine);
            self.gauges(&state.engine);
            let timers = (next_balance, &capacity);
            let wake = wait(cx, &state.engine, &mut rx, timers, &mut kick).await;
            // A cancel from the HTTP endpoint, answered once its batch is
            // done (dropped unanswered if the batch fails).
            let mut cancel = None;
            let first = match wake {
                Wake::Stopped => break Ok(End::Stopped),
                Wake::Balance => {
                    next_balance = Some(tokio::time::Instant::now() + BALANCE_EVERY);
                    match self
                        .balance(store, &mut state.engine, &mut state.refused)
                        .await
                    {
                        Ok(Balanced::Quiet) => continue,
                        Ok(Balanced::Ask) => None,
                        Ok(Balanced::Changed(end)) => break Ok(end),
                        Err(e) => break Err(e),
                    }
                }
                Wake::Inbound(msg) => msg,
                Wake::Query(q) => match answer(&state.engine, q) {
                    None => continue,
                    // The endpoint gave up waiting (answered 503): an
                    // action asked before this session began is not
                    // applied late.
                    Some((_, _, asked)) if asked.is_closed() => continue,
                    Some((id, _, asked)) if !ownership.owns(ownership.part_of(&id)) => {
                        let _ = asked.send(Some(http::Acted::NotOwned));
                        continue;
                    }
                    Some((id, action, asked)) => {
                        // The same request as a `cancel` or `rerun` from
                        // the broker, answered through the endpoint.
                        let reply = Arc::new(OnceLock::new());
                        let answer = Reply::Http(reply.clone());
                        state.http.push(match action {
                            http::Action::Cancel => Request::Cancel { id, reply: answer },
                            http::Action::Rerun(ask) => Request::Rerun(super::rerun::Rerun {
                                id,
                                ask,
                                reply: answer,
                            }),
                        });
                        cancel = Some((reply, asked));
                        None
                    }
                },
                Wake::Due => None,
                Wake::Capacity => continue,
                Wake::Flush => {
                    let (ops, _) = state.engine.take_batch();
                    store.commit_relaxed(ops).await?;
                    continue;
                }
            };
            let max = (self.config.max_batch, self.config.bounds.max_batch_bytes);
            gather(&mut batch, first, &mut rx, max);
            let step = self.step(&mut state, store, &ctx, &mut batch).await;
            if let Err(e) = step {
                break Err(e);
            }
            if let Some((reply, asked)) = cancel {
                let _ = asked.send(reply.get().cloned().map(http::Acted::Report));
            }
            // Room freed for a waiting submission: take it without waiting
            // for a delivery to wake the loop.
            kick |= state.waiting.first_fits(&state.engine);
            // Room freed for a queued workflow: start it now.
            kick |= state.engine.has_startable();
            // Dispatch stopped at the batch's byte bound: go on at once.
            kick |= state.engine.dispatch_cut();
        };
        self.metrics.broker_connected.store(0, Ordering::Relaxed);
        self.wind_down(store, &mut state.engine, outcome).await
    }

    /// After the loop: on a clean end, commits what is left (deletions of
    /// published outbox rows).
    async fn wind_down(
        &self,
        store: &Store,
        engine: &mut Engine,
        outcome: Result<End, SchedulerError>,
    ) -> Result<End, SchedulerError> {
        if outcome.is_ok() && engine.has_ops() {
            let (ops, _) = engine.take_batch();
            store.commit(ops).await?;
        }
        if outcome.as_ref().is_ok_and(|e| *e == End::Stopped) {
            tracing::info!("Scheduler stopped");
        }
        outcome
    }

    /// The balance tick (partitioned stores): evens out the partitions
    /// among the schedulers and, when they stay as they are, learns which
    /// schedulers want places of limited types and what is paused (a
    /// `pause` or `resume` another scheduler applied holds here from this
    /// tick on).
    async fn balance(
        &self,
        store: &Store,
        engine: &mut Engine,
        refused: &mut HashSet<String>,
    ) -> Result<Balanced, SchedulerError> {
        let Some(parts) = store.partitioned() else {
            return Ok(Balanced::Quiet);
        };
        match parts.balance().await? {
            Balance::Unchanged => {
                if !self.config.type_limits.is_empty() {
                    let waiting = parts.type_waiters().await?;
                    engine.set_type_waiters(&waiting);
                }
                let resumed = engine.set_pauses(&store.pauses().await?);
                if engine.has_parked() {
                    refused.clear();
                    // A batch of nothing: asks for places again, or uses a
                    // share raised since.
                    return Ok(Balanced::Ask);
                }
                // A batch of nothing dispatches what was resumed.
                Ok(if resumed {
                    Balanced::Ask
                } else {
                    Balanced::Quiet
                })
            }
            Balance::Acquired(n) => {
                tracing::info!(partitions = n, "Took partitions over; loading them");
                Ok(Balanced::Changed(End::Rebalance(0)))
            }
            Balance::Release(n) => {
                tracing::info!(
                    partitions = n,
                    "Another scheduler joined; handing partitions over"
                );
                Ok(Balanced::Changed(End::Rebalance(n)))
            }
        }
    }

    /// Publishes the engine's gauges to the metrics.
    fn gauges(&self, engine: &Engine) {
        self.metrics
            .workflows_running
            .store(engine.active_workflows() as u64, Ordering::Relaxed);
        self.metrics
            .workflows_scheduled
            .store(engine.scheduled_len() as u64, Ordering::Relaxed);
        self.metrics
            .workflows_queued
            .store(engine.queued_len() as u64, Ordering::Relaxed);
        self.metrics
            .schedules
            .store(engine.schedules_len() as u64, Ordering::Relaxed);
        *self.metrics.in_flight.lock().expect("not poisoned") = engine.in_flight_by_queue();
        *self.metrics.windows.lock().expect("not poisoned") = engine.window_by_queue();
        *self.metrics.types.lock().expect("not poisoned") = engine.type_usage();
        *self.metrics.paused.lock().expect("not poisoned") = engine.pause_usage();
    }
}

/// Waits for the loop's next reason to act, in this order of precedence.
/// `next_balance` is the next balance tick, if partitioned; `capacity`
/// says when the workers' capacities are to be read again.
async fn wait(
    cx: &mut SessionContext<'_>,
    engine: &Engine,
    rx: &mut mpsc::Receiver<Inbound>,
    (next_balance, capacity): (Option<tokio::time::Instant>, &Feed),
    kick: &mut bool,
) -> Wake {
    let due = match (engine.next_due_ms(), engine.next_progress_ms()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let wait_due =
        due.map(|due| Duration::from_millis((due - Utc::now().timestamp_millis()).max(0) as u64));
    // Deletions of published outbox rows ride along with the next
    // batch; after a quiet spell they are flushed on their own.
    let flush_in = engine.has_ops().then_some(OUTBOX_FLUSH_IDLE);
    tokio::select! {
        biased;
        () = cx.shutdown.cancelled() => Wake::Stopped,
        () = sleep_until_opt(next_balance) => Wake::Balance,
        // Before deliveries, which may never pause under load.
        () = capacity.changed() => Wake::Capacity,
        () = sleep_until_opt(capacity.next()) => Wake::Capacity,
        msg = rx.recv() => Wake::Inbound(msg),
        Some(q) = cx.queries.recv() => Wake::Query(q),
        () = sleep_opt(wait_due) => Wake::Due,
        () = std::future::ready(()), if *kick => {
            *kick = false;
            Wake::Due
        }
        () = sleep_opt(flush_in) => Wake::Flush,
    }
}

/// The batch: `first` and whatever else has arrived, up to `max_batch`
/// deliveries and `max_bytes` bytes of their bodies (the delivery that
/// passes it is the batch's last).
fn gather(
    batch: &mut Vec<Inbound>,
    first: Option<Inbound>,
    rx: &mut mpsc::Receiver<Inbound>,
    (max_batch, max_bytes): (usize, usize),
) {
    let mut bytes: usize = first.as_ref().map_or(0, Inbound::body_len);
    batch.extend(first);
    while batch.len() < max_batch && bytes < max_bytes {
        match rx.try_recv() {
            Ok(m) => {
                bytes = bytes.saturating_add(m.body_len());
                batch.push(m);
            }
            Err(_) => break,
        }
    }
}

/// A cancel or rerun from the HTTP endpoint: the workflow, the action,
/// and where to answer.
type HttpAction = (String, http::Action, oneshot::Sender<Option<http::Acted>>);

/// Answers an HTTP query from the engine; a cancel or rerun is not
/// answered here but handed back, to be applied in a batch.
fn answer(engine: &Engine, q: http::Query) -> Option<HttpAction> {
    match q {
        http::Query::Report { id, answer } => {
            let _ = answer.send(engine.report_within(&id, http::REPORT_BOUNDS));
        }
        http::Query::Task { id, task, answer } => {
            let _ = answer.send(engine.task_report(&id, &task));
        }
        http::Query::Act { id, action, answer } => return Some((id, action, answer)),
    }
    None
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

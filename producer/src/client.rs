//! [`Client`]: submit, wait, status, cancel, pause and resume over plain
//! AMQP.
//!
//! Answers come back RPC-style: every request carries `reply_to` (this
//! client's exclusive, server-named queue) and a fresh `correlation_id`,
//! and the scheduler publishes the report there.
//!
//! The client survives broker restarts and cut connections: an operation
//! that fails on a dead connection reconnects (capped exponential backoff)
//! and tries again until its deadline. Retrying is safe because requests
//! are idempotent by workflow id: a request whose reply queue died with the
//! old connection is simply sent again from the new one, and the scheduler
//! answers it with the same outcome.

use futures_lite::StreamExt;
use lapin::{Channel, Connection, options::QueueBindOptions, types::FieldTable};
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use warren_shared::{
    AmqpConfig, Topology, amqp,
    backoff::Backoff,
    topology::CONTROL_ROUTING_KEY,
    wire::{
        ControlKind, ControlRequest, Paused, PruneReport, Rejection, ScheduleReport, ScheduleSpec,
        SchedulesPage, TYPE_PROGRESS, WorkersReport, WorkflowProgress, WorkflowReport,
    },
};

/// What [`Client::pause`] and [`Client::resume`] act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseTarget {
    /// Every task of a task queue.
    Queue(String),
    /// Every task of a task type (in whichever queue).
    Type(String),
}

/// How long [`Client::submit`] keeps trying to get a request confirmed.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(60);

/// What can go wrong for a producer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Broker(#[from] warren_shared::Error),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the scheduler's reply does not decode: {0}")]
    InvalidReply(String),
    /// The scheduler did not apply the request (e.g. `too_many_pauses`,
    /// `invalid_control`).
    #[error("refused ({code}): {message}")]
    Refused { code: String, message: String },
    #[error(
        "no answer for workflow {workflow} within {after:?}; is a scheduler running on namespace `{namespace}`?"
    )]
    Timeout {
        workflow: String,
        after: Duration,
        namespace: String,
    },
    #[error("gave up after {after:?}: {last}")]
    Unavailable {
        after: Duration,
        #[source]
        last: warren_shared::Error,
    },
}

/// Reply bodies awaited, by correlation id.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;
/// Progress events wanted, by workflow id.
type Watchers = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<WorkflowProgress>>>>;

/// One connection with its channels and reply queue.
struct Session {
    conn: Connection,
    publish: Channel,
    reply_queue: String,
    /// Cancelled when the reply consumer stops: the connection is gone.
    dead: CancellationToken,
}

/// A connection to Warren through RabbitMQ.
pub struct Client {
    config: AmqpConfig,
    topology: Topology,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    waiters: Waiters,
    watchers: Watchers,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("amqp", &self.config)
            .finish()
    }
}

/// What a request asks: a workflow submitted (its progress watched or
/// not), or a control request, which goes with the routing key
/// [`CONTROL_ROUTING_KEY`] so that it is never held behind submissions
/// waiting for room in the scheduler's memory budget.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Submit { watch: bool },
    Control,
}

impl Client {
    /// Connects, declares the topology (so requests wait durably even
    /// before a scheduler starts) and opens a private reply queue. Fails at
    /// once if the broker cannot be reached.
    pub async fn connect(config: &AmqpConfig) -> Result<Client, ClientError> {
        let client = Client {
            config: config.clone(),
            topology: config.topology(),
            session: tokio::sync::Mutex::new(None),
            waiters: Arc::default(),
            watchers: Arc::default(),
        };
        client.session().await?;
        Ok(client)
    }

    /// The live session, opening a new one if the last died.
    async fn session(&self) -> Result<Arc<Session>, warren_shared::Error> {
        let mut current = self.session.lock().await;
        if let Some(s) = current.as_ref()
            && !s.dead.is_cancelled()
        {
            return Ok(s.clone());
        }
        let s = Arc::new(self.open().await?);
        *current = Some(s.clone());
        Ok(s)
    }

    async fn open(&self) -> Result<Session, warren_shared::Error> {
        let conn = self
            .config
            .connect(&format!("warren-producer {}", self.config.namespace))
            .await?;
        match self.open_on(&conn).await {
            Ok((publish, reply_queue, dead)) => Ok(Session {
                conn,
                publish,
                reply_queue,
                dead,
            }),
            Err(e) => {
                amqp::close(&conn, "client setup failed").await;
                Err(e)
            }
        }
    }

    async fn open_on(
        &self,
        conn: &Connection,
    ) -> Result<(Channel, String, CancellationToken), warren_shared::Error> {
        self.topology.declare_or_check(conn).await?;
        let publish = amqp::confirm_channel(conn).await?;
        let (_replies, reply_queue, mut consumer) = amqp::private_queue(conn, &[]).await?;
        let dead = CancellationToken::new();
        let (routes, watchers, on_death) =
            (self.waiters.clone(), self.watchers.clone(), dead.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                if d.properties.kind().as_ref().map(|k| k.as_str()) == Some(TYPE_PROGRESS) {
                    // Bound by a watching submit: `workflow.{id}.progress`.
                    if let Ok(p) = serde_json::from_slice::<WorkflowProgress>(&d.data)
                        && let Some(tx) = watchers.lock().expect("not poisoned").get(&p.workflow_id)
                    {
                        let _ = tx.send(p);
                    }
                    continue;
                }
                let Some(corr) = d.properties.correlation_id().as_ref() else {
                    continue;
                };
                let Some(tx) = routes.lock().expect("not poisoned").remove(corr.as_str()) else {
                    continue; // a reply nobody waits for any more
                };
                let _ = tx.send(d.data);
            }
            on_death.cancel();
        });
        Ok((publish, reply_queue, dead))
    }

    /// Marks `s` dead (if it is still the current session) so the next
    /// call reconnects.
    fn retire(&self, s: &Session) {
        s.dead.cancel();
    }

    /// Gives `request` an id when it has none, and returns it.
    fn ensure_id(request: &mut Value) -> Result<String, ClientError> {
        let obj = request.as_object_mut().ok_or_else(|| {
            ClientError::InvalidRequest("a workflow request must be a JSON object".into())
        })?;
        match obj.get("id") {
            Some(Value::String(id)) => Ok(id.clone()),
            Some(other) => Err(ClientError::InvalidRequest(format!(
                "`id` must be a string, not {other}"
            ))),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                obj.insert("id".into(), Value::String(id.clone()));
                Ok(id)
            }
        }
    }

    async fn publish_on(
        &self,
        s: &Session,
        (body, routing_key): (&[u8], &str),
        message_id: &str,
        correlation: Option<&str>,
    ) -> Result<(), warren_shared::Error> {
        // A longer id than an AMQP short string holds (which the scheduler
        // refuses anyway) travels in the body only.
        let mut props = amqp::with_message_id(amqp::json_properties(), message_id);
        if let Some(c) = correlation {
            props = props
                .with_reply_to(s.reply_queue.as_str().into())
                .with_correlation_id(c.into());
        }
        let exchange = self.topology.workflows();
        let msg = amqp::Publish {
            exchange: &exchange,
            routing_key,
            mandatory: true,
            body,
            properties: props,
        };
        let confirm = amqp::publish(&s.publish, msg).await?;
        amqp::confirmed(confirm, &exchange, routing_key).await
    }

    /// Binds the session's reply queue to the workflow's progress events.
    async fn watch_on(&self, s: &Session, id: &str) -> Result<(), warren_shared::Error> {
        s.publish
            .queue_bind(
                s.reply_queue.as_str().into(),
                self.topology.events().as_str().into(),
                format!("workflow.{id}.progress").as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(warren_shared::Error::amqp("queue.bind"))
    }

    /// Waits out a backoff delay, or fails if it would pass `deadline`.
    async fn back_off(
        backoff: &mut Backoff,
        deadline: Instant,
        started: Instant,
        last: warren_shared::Error,
    ) -> Result<(), ClientError> {
        let delay = backoff.next_delay();
        if Instant::now() + delay >= deadline {
            return Err(ClientError::Unavailable {
                after: started.elapsed(),
                last,
            });
        }
        if backoff.failures() == 1 {
            tracing::warn!(error = %last, "Broker unavailable; retrying");
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Publishes a workflow request (confirmed by the broker) and returns
    /// its id. The outcome is not awaited. Retries through reconnects for
    /// up to [`PUBLISH_DEADLINE`].
    pub async fn submit(&self, mut request: Value) -> Result<String, ClientError> {
        let id = Self::ensure_id(&mut request)?;
        let body = serde_json::to_vec(&request).expect("a Value always serialises");
        let started = Instant::now();
        let deadline = started + PUBLISH_DEADLINE;
        let mut backoff = Backoff::reconnect();
        loop {
            let attempt = async {
                let s = self.session().await?;
                let sent = self.publish_on(&s, (&body, ""), &id, None).await;
                if sent.is_err() {
                    self.retire(&s);
                }
                sent
            };
            match attempt.await {
                Ok(()) => return Ok(id),
                Err(e @ warren_shared::Error::Unroutable { .. }) => return Err(e.into()),
                Err(e) => Self::back_off(&mut backoff, deadline, started, e).await?,
            }
        }
    }

    /// Publishes a request and waits for its outcome (or rejection).
    pub async fn submit_and_wait(
        &self,
        mut request: Value,
        timeout: Duration,
    ) -> Result<WorkflowReport, ClientError> {
        let id = Self::ensure_id(&mut request)?;
        let body = serde_json::to_vec(&request).expect("a Value always serialises");
        self.ask(&id, &body, timeout, Ask::Submit { watch: false })
            .await
    }

    /// Like [`Client::submit_and_wait`], calling `on_progress` with each of
    /// the workflow's progress events meanwhile (the scheduler publishes
    /// one about every second while the workflow runs and changes).
    pub async fn submit_and_watch(
        &self,
        mut request: Value,
        timeout: Duration,
        mut on_progress: impl FnMut(&WorkflowProgress),
    ) -> Result<WorkflowReport, ClientError> {
        let id = Self::ensure_id(&mut request)?;
        let body = serde_json::to_vec(&request).expect("a Value always serialises");
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.watchers
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), tx);
        let ask = self.ask(&id, &body, timeout, Ask::Submit { watch: true });
        tokio::pin!(ask);
        let outcome = loop {
            tokio::select! {
                r = &mut ask => break r,
                Some(p) = rx.recv() => on_progress(&p),
            }
        };
        self.watchers.lock().expect("not poisoned").remove(&id);
        outcome
    }

    /// Publishes a request body as it is (nothing is checked here) and
    /// waits for the answer: for bodies produced by other tools, and for
    /// testing the scheduler's validation. The AMQP `message_id` carries a
    /// fresh id, which the scheduler uses when the body names none, so a
    /// retry after a reconnect cannot start a second workflow.
    pub async fn submit_bytes_and_wait(
        &self,
        body: &[u8],
        timeout: Duration,
    ) -> Result<WorkflowReport, ClientError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.ask(&id, body, timeout, Ask::Submit { watch: false })
            .await
    }

    /// Asks the scheduler for a workflow's current report.
    pub async fn status(&self, id: &str, timeout: Duration) -> Result<WorkflowReport, ClientError> {
        let body = serde_json::to_vec(&ControlRequest::new(ControlKind::Status, id))
            .expect("wire types always serialise");
        self.ask(id, &body, timeout, Ask::Control).await
    }

    /// Asks for one task of a workflow: a report whose `tasks` holds only
    /// that task, its output in full even where the whole report elides
    /// it (`output_elided`).
    pub async fn task_status(
        &self,
        id: &str,
        task_id: &str,
        timeout: Duration,
    ) -> Result<WorkflowReport, ClientError> {
        let body = serde_json::to_vec(&ControlRequest {
            task_id: Some(task_id.to_owned()),
            ..ControlRequest::new(ControlKind::Status, id)
        })
        .expect("wire types always serialise");
        self.ask(id, &body, timeout, Ask::Control).await
    }

    /// Cancels a running workflow and returns its report: status
    /// `cancelled` when it was running, else what it already was (an
    /// ended workflow stays as it ended; an unknown id is `not_found`).
    /// Cancelling twice is harmless.
    pub async fn cancel(&self, id: &str, timeout: Duration) -> Result<WorkflowReport, ClientError> {
        let body = serde_json::to_vec(&ControlRequest::new(ControlKind::Cancel, id))
            .expect("wire types always serialise");
        self.ask(id, &body, timeout, Ask::Control).await
    }

    /// Re-runs an ended workflow (`rerun`) and waits for the new run's
    /// outcome: the tasks in `from` (none: every task that did not
    /// succeed) and everything downstream of them run again; the others
    /// keep their outputs. A refused rerun (the workflow still running,
    /// an unknown task, nothing to run again, ...) comes back at once
    /// with status `rejected` and the reason in `errors`; an unknown
    /// workflow as `not_found`. Asking again with the same `rerun_id` is
    /// safe: the run that id started is joined, or its outcome returned.
    /// Without one, the client makes one up, so that a request it sends
    /// again after a lost connection starts no second run.
    pub async fn rerun(
        &self,
        id: &str,
        from: &[&str],
        rerun_id: Option<&str>,
        timeout: Duration,
    ) -> Result<WorkflowReport, ClientError> {
        let body = serde_json::to_vec(&ControlRequest {
            from: (!from.is_empty()).then(|| from.iter().map(|t| (*t).to_owned()).collect()),
            rerun_id: Some(
                rerun_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
            ),
            ..ControlRequest::new(ControlKind::Rerun, id)
        })
        .expect("wire types always serialise");
        self.ask(id, &body, timeout, Ask::Control).await
    }

    /// The scheduler's worker registry: every worker heard from in
    /// heartbeats, with its state (`running`, `stopping` or `lost`).
    pub async fn workers(&self, timeout: Duration) -> Result<WorkersReport, ClientError> {
        let body = serde_json::to_vec(&ControlRequest::new(ControlKind::Workers, ""))
            .expect("wire types always serialise");
        self.ask("workers", &body, timeout, Ask::Control).await
    }

    /// Deletes the workflows that ended longer ago than `older_than` (as
    /// retention, `WARREN_RETENTION`, does), with their tasks, results,
    /// replies and runs, and returns what was deleted; one request
    /// deletes at most 10,000: ask again while the answer says `more`.
    pub async fn prune(
        &self,
        older_than: Duration,
        timeout: Duration,
    ) -> Result<PruneReport, ClientError> {
        let body = serde_json::to_vec(&ControlRequest {
            older_than_ms: Some(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX)),
            ..ControlRequest::new(ControlKind::Prune, "")
        })
        .expect("wire types always serialise");
        self.ask("prune", &body, timeout, Ask::Control).await
    }

    /// Pauses the dispatch of a task queue's or a task type's tasks, in
    /// every scheduler of the namespace (running tasks finish), and
    /// returns what is paused now. Pausing twice is harmless.
    pub async fn pause(
        &self,
        target: &PauseTarget,
        timeout: Duration,
    ) -> Result<Paused, ClientError> {
        self.change_pause(ControlKind::Pause, target, timeout).await
    }

    /// Resumes what [`Client::pause`] paused, and returns what is still
    /// paused. Resuming what is not paused is harmless.
    pub async fn resume(
        &self,
        target: &PauseTarget,
        timeout: Duration,
    ) -> Result<Paused, ClientError> {
        self.change_pause(ControlKind::Resume, target, timeout)
            .await
    }

    async fn change_pause(
        &self,
        control: ControlKind,
        target: &PauseTarget,
        timeout: Duration,
    ) -> Result<Paused, ClientError> {
        let (queue, kind) = match target {
            PauseTarget::Queue(q) => (Some(q.clone()), None),
            PauseTarget::Type(t) => (None, Some(t.clone())),
        };
        let body = serde_json::to_vec(&ControlRequest {
            queue,
            kind,
            ..ControlRequest::new(control, "")
        })
        .expect("wire types always serialise");
        // The answer, or a `rejected` report for an invalid request: both
        // carry `errors`.
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            paused: Option<Paused>,
            #[serde(default)]
            errors: Vec<Rejection>,
        }
        let what = if control == ControlKind::Pause {
            "pause"
        } else {
            "resume"
        };
        let answer: Answer = self.ask(what, &body, timeout, Ask::Control).await?;
        if let Some(e) = answer.errors.into_iter().next() {
            return Err(ClientError::Refused {
                code: e.code,
                message: e.message,
            });
        }
        answer
            .paused
            .ok_or_else(|| ClientError::InvalidReply("the answer says nothing of pauses".into()))
    }

    /// Stores a new schedule (`schedule.create`) and returns the answer:
    /// outcome `created`, or `rejected` with `errors` (an invalid schedule,
    /// `schedule_exists`, `too_many_schedules`).
    pub async fn schedule_create(
        &self,
        spec: ScheduleSpec,
        timeout: Duration,
    ) -> Result<ScheduleReport, ClientError> {
        let id = spec.id.clone();
        let body = serde_json::to_vec(&ControlRequest {
            schedule: Some(Box::new(spec)),
            ..ControlRequest::new(ControlKind::ScheduleCreate, "")
        })
        .expect("wire types always serialise");
        self.ask_schedule(&id, &body, timeout).await
    }

    /// `schedule.get`, `schedule.pause`, `schedule.resume`,
    /// `schedule.trigger` or `schedule.delete` of schedule `id`: the
    /// answer's `outcome` says what happened (`not_found` for an unknown
    /// id). A trigger sent again after a lost connection fires again.
    pub async fn schedule(
        &self,
        control: ControlKind,
        id: &str,
        timeout: Duration,
    ) -> Result<ScheduleReport, ClientError> {
        let body = serde_json::to_vec(&ControlRequest {
            schedule_id: Some(id.to_owned()),
            ..ControlRequest::new(control, "")
        })
        .expect("wire types always serialise");
        self.ask_schedule(id, &body, timeout).await
    }

    /// One page of `schedule.list`: schedules in id order after `after`.
    pub async fn schedule_list(
        &self,
        after: Option<&str>,
        limit: Option<u32>,
        timeout: Duration,
    ) -> Result<SchedulesPage, ClientError> {
        let body = serde_json::to_vec(&ControlRequest {
            after: after.map(str::to_owned),
            limit,
            ..ControlRequest::new(ControlKind::ScheduleList, "")
        })
        .expect("wire types always serialise");
        let page: SchedulesPage = self
            .ask("schedule.list", &body, timeout, Ask::Control)
            .await?;
        refused(page.errors.first())?;
        Ok(page)
    }

    /// Asks a `schedule.*` request about one schedule. An invalid request
    /// is answered with a `rejected` workflow report: that is an error.
    async fn ask_schedule(
        &self,
        id: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<ScheduleReport, ClientError> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Answer {
            Schedule(Box<ScheduleReport>),
            Other {
                #[serde(default)]
                errors: Vec<Rejection>,
            },
        }
        match self.ask(id, body, timeout, Ask::Control).await? {
            Answer::Schedule(report) => Ok(*report),
            Answer::Other { errors } => {
                refused(errors.first())?;
                Err(ClientError::InvalidReply(
                    "the answer says nothing of schedules".into(),
                ))
            }
        }
    }

    /// Sends `body` with a reply address and waits for the answer, sending
    /// it again from a new connection if the old one dies meanwhile. With
    /// `watch`, the reply queue also receives the workflow's progress events.
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        body: &[u8],
        timeout: Duration,
        what: Ask,
    ) -> Result<T, ClientError> {
        let (watch, key) = match what {
            Ask::Submit { watch } => (watch, ""),
            Ask::Control => (false, CONTROL_ROUTING_KEY),
        };
        let started = Instant::now();
        let deadline = started + timeout;
        let mut backoff = Backoff::reconnect();
        loop {
            let s = match self.session().await {
                Ok(s) => s,
                Err(e) => {
                    Self::back_off(&mut backoff, deadline, started, e).await?;
                    continue;
                }
            };
            let corr = uuid::Uuid::new_v4().to_string();
            let (tx, rx) = oneshot::channel();
            self.waiters
                .lock()
                .expect("not poisoned")
                .insert(corr.clone(), tx);
            let forget = || self.waiters.lock().expect("not poisoned").remove(&corr);
            let sent = async {
                if watch {
                    self.watch_on(&s, id).await?;
                }
                self.publish_on(&s, (body, key), id, Some(&corr)).await
            };
            if let Err(e) = sent.await {
                forget();
                self.retire(&s);
                if matches!(e, warren_shared::Error::Unroutable { .. }) {
                    return Err(e.into());
                }
                Self::back_off(&mut backoff, deadline, started, e).await?;
                continue;
            }
            tokio::select! {
                reply = rx => {
                    if let Ok(body) = reply {
                        return serde_json::from_slice(&body)
                            .map_err(|e| ClientError::InvalidReply(e.to_string()));
                    }
                    // The sender was dropped without an answer: ask again.
                }
                () = s.dead.cancelled() => {
                    forget();
                    backoff.reset();
                    tracing::warn!(workflow = %id, "Connection lost while waiting; asking again");
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    forget();
                    return Err(ClientError::Timeout {
                        workflow: id.to_owned(),
                        after: timeout,
                        namespace: self.topology.namespace().to_owned(),
                    });
                }
            }
        }
    }

    /// Closes the connection (the reply queue goes with it).
    pub async fn close(self) {
        if let Some(s) = self.session.lock().await.take() {
            amqp::close(&s.conn, "client closing").await;
        }
    }
}

/// The first error of an answer, as [`ClientError::Refused`].
fn refused(first: Option<&Rejection>) -> Result<(), ClientError> {
    match first {
        Some(e) => Err(ClientError::Refused {
            code: e.code.clone(),
            message: e.message.clone(),
        }),
        None => Ok(()),
    }
}

//! The `bombs` scenario (`--bombs N`): issue 15's hostile and oversized
//! requests (the battery of tests/integration/bombs/), N rounds of them
//! thrown between the chunks of ordinary workflows, so that they meet the
//! faults too. The ordinary workflows must all complete as before (the
//! usual invariants); each bomb must end as the limits say, read from the
//! store at the end (answers go to a private reply queue, which a broker
//! restart or a disconnect may take away, so they are only counted); the
//! dead letters the bombs cause are told apart from the planted poison by
//! their workflow ids (`bomb-...`).
//!
//! A round: (a) an invalid 4 KiB task id whose `depends_on` lists `a`
//! 200,000 times; (b) 1 MiB of workflow input referenced 200 times in one
//! task's input; (c) an output over the worker's result limit echoed into
//! 20 dependents, and (c') one just under it; (d) a task queue that exists
//! with other arguments; (e) one more distinct task queue than the
//! scheduler's `max_queues`; (f) 2,000 duplicate submissions of a running
//! workflow, each with a reply address; (g) results over the scheduler's
//! `max_result_bytes` published straight onto `{ns}.results`; (i) 20,000
//! worker ids in heartbeats, some 4 KiB long. The memory budget (h) is the
//! `--max-active-tasks` flag, which holds the ordinary workflows' requests
//! in the broker while faults hit.

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::{
    options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use warren_producer::Client;
use warren_shared::{AmqpConfig, wire::WorkflowStatus};

const MIB: usize = 1024 * 1024;
/// The queue no worker takes: the running workflows of (f) and (g).
const HELD: &str = "bomb-held";
/// The queue declared beforehand with other arguments (d).
const CLASH: &str = "bomb-clash";
/// How long a control request of the scenario may take (the client sends
/// it again across faults; control requests wait behind submissions held
/// for the memory budget, and a debug build moves large outputs slowly).
const ASK: Duration = Duration::from_secs(300);

/// One bomb of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    InvalidId,
    InputExpansion,
    OutputOverLimit,
    OutputUnderLimit,
    QueueConflict,
    TooManyQueues,
    Duplicates,
    OversizedResults,
    WorkerIds,
}

const ROUND: [Kind; 9] = [
    Kind::InvalidId,
    Kind::InputExpansion,
    Kind::OutputOverLimit,
    Kind::OutputUnderLimit,
    Kind::QueueConflict,
    Kind::TooManyQueues,
    Kind::Duplicates,
    Kind::OversizedResults,
    Kind::WorkerIds,
];

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::InvalidId => "a",
            Kind::InputExpansion => "b",
            Kind::OutputOverLimit => "c-over",
            Kind::OutputUnderLimit => "c-under",
            Kind::QueueConflict => "d",
            Kind::TooManyQueues => "e",
            Kind::Duplicates => "f",
            Kind::OversizedResults => "g",
            Kind::WorkerIds => "i",
        }
    }
}

/// A bomb thrown: its kind and the workflow id it is recorded under.
struct Thrown {
    kind: Kind,
    id: String,
}

/// The thrower's connection: a confirm channel and a private reply queue
/// whose answers are counted.
struct Conn {
    conn: lapin::Connection,
    ch: lapin::Channel,
    reply_to: String,
}

/// The scenario: what to throw, what was thrown, and the answers heard.
pub struct Bombs {
    amqp: AmqpConfig,
    rounds: usize,
    /// The scheduler's `max_queues`, for (e).
    max_queues: usize,
    thrown: Vec<Thrown>,
    conn: Option<Conn>,
    answers: Arc<AtomicUsize>,
    /// Workers the scheduler listed after the heartbeat floods.
    listed: Option<usize>,
}

/// What the bombs came to, for the report.
#[derive(Debug, Default)]
pub struct Verdict {
    pub thrown: usize,
    /// Bombs that ended as the limits say.
    pub as_expected: usize,
    /// How the others ended.
    pub unexpected: Vec<String>,
    /// Answers that reached the reply queue (duplicates included).
    pub answers: usize,
    /// Dead letters caused by bombs (refused task messages, oversized
    /// results).
    pub dead_letters: usize,
}

impl Bombs {
    pub fn new(amqp: &AmqpConfig, rounds: usize, max_queues: usize) -> Bombs {
        Bombs {
            amqp: amqp.clone(),
            rounds,
            max_queues,
            thrown: Vec::new(),
            conn: None,
            answers: Arc::new(AtomicUsize::new(0)),
            listed: None,
        }
    }

    /// Workflows the bombs add to the store (each one is recorded).
    pub fn recorded(&self) -> usize {
        self.thrown
            .iter()
            .filter(|t| t.kind != Kind::WorkerIds)
            .count()
    }

    /// Throws the bombs due after chunk `step` of `chunks`: the rounds'
    /// bombs spread evenly over the chunks.
    pub async fn throw_due(&mut self, step: usize, chunks: usize) -> anyhow::Result<()> {
        let total = self.rounds * ROUND.len();
        let (from, to) = (step * total / chunks, (step + 1) * total / chunks);
        for n in from..to {
            let kind = ROUND[n % ROUND.len()];
            let id = format!("bomb-{}-{}", kind.tag(), n / ROUND.len());
            self.throw(kind, &id)
                .await
                .with_context(|| format!("throwing {id}"))?;
            println!("bomb {:>3}/{total}: {id}", n + 1);
            self.thrown.push(Thrown { kind, id });
        }
        Ok(())
    }

    /// Ends what the bombs left running (the held workflows of (f) and
    /// (g)) and asks for the worker registry after the floods.
    pub async fn settle(&mut self, client: &Client) -> anyhow::Result<()> {
        for t in &self.thrown {
            if matches!(t.kind, Kind::Duplicates | Kind::OversizedResults) {
                cancel(client, &t.id).await?;
            }
        }
        if self.thrown.iter().any(|t| t.kind == Kind::WorkerIds) {
            self.listed = Some(client.workers(ASK).await?.workers.len());
        }
        if let Some(c) = self.conn.take() {
            warren_shared::amqp::close(&c.conn, "thrown").await;
        }
        Ok(())
    }

    async fn throw(&mut self, kind: Kind, id: &str) -> anyhow::Result<()> {
        let workflows = self.amqp.topology().workflows();
        let request = |body: Value| (workflows.clone(), body.to_string().into_bytes());
        match kind {
            Kind::InvalidId => {
                let (x, body) = request(json!({"id": id, "tasks": [
                    {"id": "x".repeat(4096), "type": "echo", "depends_on": vec!["a"; 200_000]},
                    {"id": "a", "type": "echo"}
                ]}));
                self.send(&x, "", &body, true).await
            }
            Kind::InputExpansion => {
                let (x, body) = request(json!({"id": id, "input": {"blob": "x".repeat(MIB)},
                "tasks": [
                    {"id": "grow", "type": "echo", "input": vec!["${workflow.input.blob}"; 200]},
                    {"id": "after", "type": "echo", "depends_on": ["grow"]}
                ]}));
                self.send(&x, "", &body, true).await
            }
            Kind::OutputOverLimit | Kind::OutputUnderLimit => {
                // An 8 MiB output over the worker's default result limit,
                // or one just under it.
                let limit = warren_shared::limits::DEFAULT_MAX_RESULT_BYTES;
                let bytes = if kind == Kind::OutputOverLimit {
                    (8 * MIB).max(limit + 1)
                } else {
                    limit - 64 * 1024
                };
                let mut tasks =
                    vec![json!({"id": "big", "type": "big", "input": {"bytes": bytes}})];
                tasks.extend((0..20).map(|i| {
                    json!({"id": format!("d{i}"), "type": "echo", "depends_on": ["big"], "input": "${big.output}"})
                }));
                let (x, body) = request(json!({"id": id, "tasks": tasks}));
                self.send(&x, "", &body, true).await
            }
            Kind::QueueConflict => {
                self.declare_clash().await?;
                let (x, body) = request(json!({"id": id, "tasks": [
                    {"id": "t", "type": "echo", "queue": CLASH},
                    {"id": "after", "type": "echo", "depends_on": ["t"]}
                ]}));
                self.send(&x, "", &body, true).await
            }
            Kind::TooManyQueues => {
                let tasks: Vec<Value> = (0..=self.max_queues)
                    .map(|i| json!({"id": format!("t{i}"), "type": "echo", "queue": format!("bomb-q{i}")}))
                    .collect();
                let (x, body) = request(json!({"id": id, "tasks": tasks}));
                self.send(&x, "", &body, true).await
            }
            Kind::Duplicates => {
                let (x, body) = request(json!({"id": id, "tasks": [
                    {"id": "t", "type": "echo", "queue": HELD}
                ]}));
                // The original and 2,000 duplicates.
                self.send_all(&x, "", &vec![body; 2_001], true).await
            }
            Kind::OversizedResults => {
                let (x, body) = request(json!({"id": id, "tasks": [
                    {"id": "t", "type": "echo", "queue": HELD}
                ]}));
                self.send(&x, "", &body, true).await?;
                // Over the scheduler's default result limit (2 MiB, and the
                // 8 MiB it was): whether its attempt is running yet or not,
                // it is dead-lettered unread.
                let result = json!({"workflow_id": id, "task_id": "t", "attempt": 1,
                    "status": "succeeded", "output": "x".repeat(9 * MIB)})
                .to_string();
                let results = self.amqp.topology().results();
                self.send_all(&results, "", &vec![result.into_bytes(); 5], false)
                    .await
            }
            Kind::WorkerIds => {
                let events = self.amqp.topology().events();
                let beats: Vec<Vec<u8>> = (0..20_000)
                    .map(|i| {
                        let worker = if i % 1_000 == 0 {
                            format!("long-{}", "x".repeat(4096))
                        } else {
                            format!("{id}-{i}")
                        };
                        json!({"worker_id": worker, "queues": ["default"],
                            "concurrency": 1, "in_flight": 0, "interval_ms": 60_000,
                            "state": "running", "sent_at": "2026-01-01T00:00:00Z"})
                        .to_string()
                        .into_bytes()
                    })
                    .collect();
                self.send_all(&events, "worker.bomb.heartbeat", &beats, false)
                    .await
            }
        }
    }

    /// Publishes with a confirm (a request with this thrower's reply
    /// address when `answered`), opening the connection again if a fault
    /// closed it.
    async fn send(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        answered: bool,
    ) -> anyhow::Result<()> {
        self.send_all(exchange, routing_key, &[body.to_vec()], answered)
            .await
    }

    /// Publishes every body, then awaits every confirm; all again (at
    /// least once, like everything) if a fault closed the connection.
    async fn send_all(
        &mut self,
        exchange: &str,
        routing_key: &str,
        bodies: &[Vec<u8>],
        answered: bool,
    ) -> anyhow::Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            let c = match self.conn.take() {
                Some(c) if c.conn.status().connected() => c,
                _ => self.open().await?,
            };
            let sent: Result<(), lapin::Error> = async {
                let mut confirms = Vec::with_capacity(bodies.len());
                for body in bodies {
                    let mut props = warren_shared::amqp::json_properties();
                    if answered {
                        props = props
                            .with_reply_to(c.reply_to.as_str().into())
                            .with_correlation_id(uuid::Uuid::new_v4().to_string().into());
                    }
                    confirms.push(
                        c.ch.basic_publish(
                            exchange.into(),
                            routing_key.into(),
                            BasicPublishOptions::default(),
                            body,
                            props,
                        )
                        .await?,
                    );
                }
                for confirm in confirms {
                    confirm.await?;
                }
                Ok(())
            }
            .await;
            match sent {
                Ok(()) => {
                    self.conn = Some(c);
                    return Ok(());
                }
                Err(e) if tries < 3 => {
                    println!("bomb thrower: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn open(&self) -> anyhow::Result<Conn> {
        let conn = warren_shared::amqp::connect(&self.amqp.addr, "chaos bomb thrower").await?;
        let (_, reply_to, mut answers) = warren_shared::amqp::private_queue(&conn, &[]).await?;
        let ch = warren_shared::amqp::confirm_channel(&conn).await?;
        let count = self.answers.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = answers.next().await {
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Conn { conn, ch, reply_to })
    }

    /// `{ns}.tasks.bomb-clash`, durable, with an `x-max-length` Warren's
    /// queues do not have (declaring it again with the same arguments is
    /// harmless).
    async fn declare_clash(&self) -> anyhow::Result<()> {
        let conn = warren_shared::amqp::connect(&self.amqp.addr, "chaos bomb d").await?;
        let ch = conn.create_channel().await?;
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(5));
        ch.queue_declare(
            self.amqp.topology().task_queue(CLASH).as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
        warren_shared::amqp::close(&conn, "declared").await;
        Ok(())
    }

    /// Checks how each bomb ended, from the stored reports
    /// (`id -> (status, report)`) and the dead letters.
    pub fn verdict(&self, stored: &HashMap<String, (String, Value)>, dead: &[String]) -> Verdict {
        let mut v = Verdict {
            thrown: self.thrown.len(),
            answers: self.answers.load(Ordering::Relaxed),
            dead_letters: dead.iter().filter(|b| is_bombs(b)).count(),
            ..Verdict::default()
        };
        for t in &self.thrown {
            let outcome = match stored.get(&t.id) {
                _ if t.kind == Kind::WorkerIds => match self.listed {
                    Some(n) if n <= warren_scheduler::workers::MAX_WORKERS_LISTED => Ok(()),
                    other => Err(format!("{other:?} workers listed")),
                },
                None => Err("not recorded".to_owned()),
                Some((status, report)) => expected(t, status, report, dead),
            };
            match outcome {
                Ok(()) => v.as_expected += 1,
                Err(why) => v.unexpected.push(format!("{}: {why}", t.id)),
            }
        }
        v
    }

    /// Deletes the task queues the bombs made (the held, the clashing,
    /// and their suspect queues).
    pub async fn delete_queues(&self) -> anyhow::Result<()> {
        if self.thrown.is_empty() {
            return Ok(());
        }
        Bombs::delete_queues_of(&self.amqp).await
    }

    /// Deletes the bombs' task queues of `amqp`'s namespace, if any.
    pub async fn delete_queues_of(amqp: &AmqpConfig) -> anyhow::Result<()> {
        let topology = amqp.topology();
        let conn = warren_shared::amqp::connect(&amqp.addr, "chaos bomb cleanup").await?;
        let ch = conn.create_channel().await?;
        for q in [HELD, CLASH] {
            for name in [topology.task_queue(q), topology.suspect_queue(q)] {
                ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            }
        }
        warren_shared::amqp::close(&conn, "deleted").await;
        Ok(())
    }
}

/// Cancels `id` until the answer says it has ended: under faults a cancel
/// may be answered by a scheduler that has not loaded the workflow yet
/// (`not_found`, or still `running`), so the answer is checked, not
/// trusted.
async fn cancel(client: &Client, id: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + ASK;
    loop {
        let answer = client.cancel(id, ASK).await;
        match &answer {
            Ok(r) if r.status.is_final() && r.status != WorkflowStatus::NotFound => return Ok(()),
            Ok(r) => println!(
                "cancel of {id} answered {}; asking again",
                r.status.as_str()
            ),
            Err(e) => println!("cancel of {id}: {e}; asking again"),
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{id} could not be cancelled: {answer:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether a dead letter is one a bomb caused: its body names a bomb's
/// workflow (an oversized result as it was, or the description of a
/// refused task message).
pub fn is_bombs(body: &str) -> bool {
    body.contains("\"workflow_id\":\"bomb-")
}

/// Whether bomb `t` ended as the limits say: `Err` says how it did.
fn expected(t: &Thrown, status: &str, report: &Value, dead: &[String]) -> Result<(), String> {
    let task_error = |task: &str| {
        report["tasks"][task]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let first_code = report["errors"][0]["code"].as_str().unwrap_or_default();
    let (want, ok, got) = match t.kind {
        Kind::InvalidId => (
            "rejected, invalid_task_id",
            status == "rejected" && first_code == "invalid_task_id",
            first_code.to_owned(),
        ),
        Kind::InputExpansion => {
            let e = task_error("grow");
            (
                "failed, naming WARREN_MAX_TASK_INPUT_BYTES",
                status == "failed" && e.contains("WARREN_MAX_TASK_INPUT_BYTES"),
                e,
            )
        }
        Kind::OutputOverLimit => {
            let e = task_error("big");
            (
                "failed, the result over the worker's limit",
                status == "failed" && e.contains("`big`") && e.contains("limit"),
                e,
            )
        }
        Kind::OutputUnderLimit => ("succeeded", status == "succeeded", String::new()),
        Kind::QueueConflict => {
            let e = task_error("t");
            (
                "failed, naming the queue",
                status == "failed" && e.contains(CLASH),
                e,
            )
        }
        Kind::TooManyQueues => (
            "rejected, too_many_queues",
            status == "rejected" && first_code == "too_many_queues",
            first_code.to_owned(),
        ),
        Kind::Duplicates => ("cancelled", status == "cancelled", String::new()),
        Kind::OversizedResults => {
            let needle = format!("\"workflow_id\":\"{}\"", t.id);
            let dead_lettered = dead.iter().any(|b| b.contains(&needle));
            (
                "cancelled, its oversized results dead-lettered",
                status == "cancelled" && dead_lettered,
                format!("dead-lettered: {dead_lettered}"),
            )
        }
        Kind::WorkerIds => unreachable!("not a workflow"),
    };
    if ok {
        Ok(())
    } else {
        let mut got = got;
        got.truncate(200);
        Err(format!("{status} ({got}); expected {want}"))
    }
}

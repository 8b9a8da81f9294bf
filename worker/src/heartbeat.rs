//! Heartbeats: each session announces the worker on `{ns}.events` with the
//! key `worker.{id}.heartbeat` every `heartbeat_interval` (id, host, queues,
//! concurrency, tasks in flight, version), and a last one saying `stopping`
//! after a graceful drain. The scheduler's worker registry listens; a
//! worker silent for three intervals counts as lost.

use crate::config::WorkerConfig;
use chrono::{DateTime, Utc};
use lapin::Channel;
use std::time::Duration;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use warren_shared::{
    Topology, amqp,
    wire::{TYPE_HEARTBEAT, WorkerHeartbeat, WorkerState},
};

/// What a heartbeat says, with the in-flight count read when it is sent.
#[derive(Clone)]
pub(crate) struct Beat {
    template: WorkerHeartbeat,
    /// The session's running tasks.
    tracker: TaskTracker,
}

impl Beat {
    /// The heartbeat of a worker with `cfg`, started at `started_at`, whose
    /// running tasks `tracker` counts.
    pub fn new(cfg: &WorkerConfig, started_at: DateTime<Utc>, tracker: TaskTracker) -> Beat {
        Beat {
            template: WorkerHeartbeat {
                worker_id: cfg.worker_id.clone(),
                host: warren_shared::host_name(),
                pid: std::process::id(),
                queues: cfg.queues.clone(),
                concurrency: u32::from(cfg.concurrency),
                in_flight: 0,
                version: concat!("warren-worker ", env!("CARGO_PKG_VERSION")).into(),
                interval_ms: cfg.heartbeat_interval.as_millis() as u64,
                state: WorkerState::Running,
                started_at: Some(started_at),
                sent_at: Utc::now(),
            },
            tracker,
        }
    }

    pub fn snapshot(&self) -> WorkerHeartbeat {
        WorkerHeartbeat {
            in_flight: self.tracker.len() as u32,
            sent_at: Utc::now(),
            ..self.template.clone()
        }
    }
}

/// Announces the worker every interval until `stop`.
pub(crate) async fn heartbeats(
    ch: Channel,
    topology: Topology,
    beat: Beat,
    stop: CancellationToken,
) {
    let interval = Duration::from_millis(beat.template.interval_ms.max(1));
    loop {
        publish(&ch, &topology, &beat.snapshot()).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Publishes one heartbeat (not awaited: a lost one is replaced by the
/// next).
pub(crate) async fn publish(ch: &Channel, topology: &Topology, h: &WorkerHeartbeat) {
    let body = serde_json::to_vec(h).expect("wire types always serialise");
    let key = format!("worker.{}.heartbeat", h.worker_id);
    let props = amqp::json_properties().with_type(TYPE_HEARTBEAT.into());
    let exchange = topology.events();
    let msg = amqp::Publish {
        exchange: &exchange,
        routing_key: &key,
        mandatory: false,
        body: &body,
        properties: props,
    };
    if let Err(e) = amqp::publish(ch, msg).await {
        tracing::debug!(error = %e, "Heartbeat not sent");
    }
}

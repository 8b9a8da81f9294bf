//! The workers heard from: what each worker last announced in its
//! heartbeat, and whether it is still heard from. It answers the `workers`
//! control request and `GET /api/workers` (the protocol's "worker
//! registry"; not to be confused with the worker crate's `Registry` of
//! task handlers).
//!
//! Workers publish heartbeats on `{ns}.events` (`worker.{id}.heartbeat`);
//! each scheduler session binds a private queue to them. The directory is
//! kept in memory only: after a restart it fills again within one
//! heartbeat interval. A worker is `lost` after three of its own intervals
//! without a heartbeat, and forgotten an hour after that (or an hour after
//! it announced it was stopping).

use chrono::{DateTime, Utc};
use futures_lite::StreamExt;
use lapin::Connection;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};
use warren_shared::{
    Topology,
    wire::{WorkerEntry, WorkerHeartbeat, WorkerState, WorkersReport},
};

/// Heartbeats missed before a worker counts as lost.
const MISSED: i64 = 3;
/// How long a lost or stopped worker stays listed (ms).
const FORGET_AFTER_MS: i64 = 3_600_000;

/// Workers by id.
#[derive(Debug, Default)]
pub struct WorkerDirectory {
    workers: BTreeMap<String, WorkerEntry>,
}

impl WorkerDirectory {
    pub fn record(&mut self, heartbeat: WorkerHeartbeat, now: DateTime<Utc>) {
        self.workers.insert(
            heartbeat.worker_id.clone(),
            WorkerEntry {
                heartbeat,
                last_seen: now,
            },
        );
    }

    /// Every worker, by id, with its state as of `now`; forgets those gone
    /// for long.
    pub fn report(&mut self, now: DateTime<Utc>) -> WorkersReport {
        let silent = |w: &WorkerEntry| (now - w.last_seen).num_milliseconds();
        self.workers.retain(|_, w| {
            let overdue = MISSED.saturating_mul(w.heartbeat.interval_ms as i64);
            silent(w) < overdue.saturating_add(FORGET_AFTER_MS)
                && !(w.heartbeat.state == WorkerState::Stopping && silent(w) >= FORGET_AFTER_MS)
        });
        let workers = self
            .workers
            .values()
            .map(|w| {
                let mut w = w.clone();
                let overdue = MISSED.saturating_mul(w.heartbeat.interval_ms as i64);
                if w.heartbeat.state == WorkerState::Running && silent(&w) >= overdue {
                    w.heartbeat.state = WorkerState::Lost;
                }
                w
            })
            .collect();
        WorkersReport { workers }
    }
}

/// The directory, shared between the heartbeat listener, the scheduler's
/// control requests and whoever else reads it.
pub type SharedWorkers = Arc<Mutex<WorkerDirectory>>;

/// Binds a private queue of this session to the workers' heartbeats and
/// records them until the connection goes.
pub async fn listen(
    conn: &Connection,
    topology: &Topology,
    workers: SharedWorkers,
) -> Result<(), warren_shared::Error> {
    let events = topology.events();
    let (_, _, mut heartbeats) =
        warren_shared::amqp::private_queue(conn, &[(&events, "worker.*.heartbeat")]).await?;
    tokio::spawn(async move {
        while let Some(Ok(d)) = heartbeats.next().await {
            match serde_json::from_slice::<WorkerHeartbeat>(&d.data) {
                Ok(h) => workers.lock().expect("not poisoned").record(h, Utc::now()),
                Err(e) => tracing::warn!(error = %e, "Undecodable heartbeat ignored"),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn beat(id: &str, state: WorkerState) -> WorkerHeartbeat {
        WorkerHeartbeat {
            worker_id: id.into(),
            host: "h".into(),
            pid: 1,
            queues: vec!["default".into()],
            concurrency: 4,
            in_flight: 1,
            version: "warren-worker test".into(),
            interval_ms: 1_000,
            state,
            started_at: None,
            sent_at: Utc::now(),
        }
    }

    #[test]
    fn silent_workers_become_lost_then_are_forgotten() {
        let mut r = WorkerDirectory::default();
        let t0 = Utc::now();
        r.record(beat("a", WorkerState::Running), t0);
        r.record(beat("b", WorkerState::Stopping), t0);
        let states = |r: &mut WorkerDirectory, at| -> Vec<(String, WorkerState)> {
            r.report(at)
                .workers
                .into_iter()
                .map(|w| (w.heartbeat.worker_id, w.heartbeat.state))
                .collect()
        };
        assert_eq!(
            states(&mut r, t0 + Duration::milliseconds(2_900)),
            vec![
                ("a".into(), WorkerState::Running),
                ("b".into(), WorkerState::Stopping)
            ]
        );
        assert_eq!(
            states(&mut r, t0 + Duration::milliseconds(3_000)),
            vec![
                ("a".into(), WorkerState::Lost),
                ("b".into(), WorkerState::Stopping)
            ]
        );
        assert!(states(&mut r, t0 + Duration::hours(2)).is_empty());
    }
}

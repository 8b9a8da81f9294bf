//! The processes under test: the schedulers and workers, children of this
//! program, started, killed with SIGKILL and replaced.

use crate::{
    ChildArgs,
    cluster::NodeFaults,
    splits::{Network, Restarts},
};
use anyhow::bail;
use std::ffi::OsStr;
use warren_harness::{Child, Launcher};
use warren_shared::QueueType;

/// The processes under test.
pub struct Fleet {
    launcher: Launcher,
    /// What every child is given (its `id` aside).
    pub args: ChildArgs,
    schedulers: Vec<Child>,
    workers: Vec<Child>,
    /// The workers' names, as `workers`.
    worker_ids: Vec<String>,
    /// Workers started so far, to name the next one.
    spawned_workers: usize,
    /// With `--cluster`: the run's broker nodes and their faults.
    pub nodes: Option<NodeFaults>,
    /// With `--partitions`: every child's links to the broker and store.
    pub network: Option<Network>,
    /// With `--pg-restarts`: the run's own PostgreSQL server.
    pub restarts: Option<Restarts>,
}

impl Fleet {
    /// Starts `schedulers` schedulers, then `workers` workers, each
    /// through its links of `network` when given.
    pub fn start(
        launcher: Launcher,
        args: ChildArgs,
        (schedulers, workers): (usize, usize),
        network: Option<Network>,
    ) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet {
            launcher,
            args,
            schedulers: Vec::new(),
            workers: Vec::new(),
            worker_ids: Vec::new(),
            spawned_workers: 0,
            nodes: None,
            network,
            restarts: None,
        };
        for i in 0..schedulers {
            let s = fleet.spawn_scheduler(i)?;
            fleet.schedulers.push(s);
        }
        for _ in 0..workers {
            let w = fleet.new_worker()?;
            fleet.workers.push(w);
            fleet.worker_ids.push(fleet.last_worker());
        }
        Ok(fleet)
    }

    /// Starts this program as a `mode` child named `id` (its log is
    /// `{id}.log`, continued when a child of that name is restarted).
    fn spawn(&self, mode: &str, id: &str) -> anyhow::Result<Child> {
        let a = &self.args;
        let queue_type = match a.queue_type {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        };
        let (tasks, queues) = (a.max_active_tasks.to_string(), a.max_queues.to_string());
        let (amqp_addr, store) = match &self.network {
            Some(n) => n.route(id)?,
            None => (a.amqp_addr.clone(), a.store.clone()),
        };
        let flags: [(&str, &OsStr); 8] = [
            ("--amqp-addr", amqp_addr.as_ref()),
            ("--namespace", a.namespace.as_ref()),
            ("--dir", a.dir.as_ref()),
            ("--id", id.as_ref()),
            ("--store", store.as_ref()),
            ("--queue-type", queue_type.as_ref()),
            ("--max-active-tasks", tasks.as_ref()),
            ("--max-queues", queues.as_ref()),
        ];
        let args = std::iter::once(OsStr::new(mode))
            .chain(flags.into_iter().flat_map(|(f, v)| [OsStr::new(f), v]));
        Ok(self.launcher.spawn(id, args)?)
    }

    fn new_worker(&mut self) -> anyhow::Result<Child> {
        self.spawned_workers += 1;
        let id = format!("worker-{}", self.spawned_workers);
        self.spawn("worker", &id)
    }

    fn last_worker(&self) -> String {
        format!("worker-{}", self.spawned_workers)
    }

    /// The names of the schedulers and of the live workers.
    pub fn names(&self) -> (Vec<String>, Vec<String>) {
        let schedulers = (0..self.schedulers.len())
            .map(|i| format!("scheduler-{i}"))
            .collect();
        (schedulers, self.worker_ids.clone())
    }

    fn spawn_scheduler(&self, i: usize) -> anyhow::Result<Child> {
        self.spawn("scheduler", &format!("scheduler-{i}"))
    }

    /// Kills the scheduler with pid `target`, or one at random, and starts
    /// it again; returns the killed one's pid.
    pub fn kill_scheduler(&mut self, target: Option<u32>) -> anyhow::Result<u32> {
        let i = target
            .and_then(|pid| self.schedulers.iter().position(|c| c.pid() == pid))
            .unwrap_or_else(|| fastrand::usize(0..self.schedulers.len()));
        let pid = self.schedulers[i].pid();
        self.schedulers[i].kill();
        self.schedulers[i] = self.spawn_scheduler(i)?;
        Ok(pid)
    }

    pub fn kill_worker(&mut self) -> anyhow::Result<()> {
        let i = fastrand::usize(0..self.workers.len());
        self.workers[i].kill();
        self.workers[i] = self.new_worker()?;
        self.worker_ids[i] = self.last_worker();
        Ok(())
    }

    /// Replaces workers that died by themselves (the poison kills them).
    pub fn revive(&mut self) -> anyhow::Result<usize> {
        let mut revived = 0;
        for i in 0..self.workers.len() {
            if self.workers[i].has_exited()? {
                self.workers[i] = self.new_worker()?;
                self.worker_ids[i] = self.last_worker();
                revived += 1;
            }
        }
        for (i, s) in self.schedulers.iter_mut().enumerate() {
            if s.has_exited()? {
                bail!(
                    "scheduler {i} exited by itself; see {}",
                    self.args.dir.join(format!("scheduler-{i}.log")).display()
                );
            }
        }
        Ok(revived)
    }

    pub fn stop(&mut self) {
        for c in self.schedulers.iter_mut().chain(self.workers.iter_mut()) {
            c.kill();
        }
    }
}

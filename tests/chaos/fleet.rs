//! The processes under test: the schedulers and workers, children of this
//! program, started, killed with SIGKILL and replaced.

use crate::{ChildArgs, cluster::NodeFaults};
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
    /// Workers started so far, to name the next one.
    spawned_workers: usize,
    /// With `--cluster`: the run's broker nodes and their faults.
    pub nodes: Option<NodeFaults>,
}

impl Fleet {
    /// Starts `schedulers` schedulers, then `workers` workers.
    pub fn start(
        launcher: Launcher,
        args: ChildArgs,
        schedulers: usize,
        workers: usize,
    ) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet {
            launcher,
            args,
            schedulers: Vec::new(),
            workers: Vec::new(),
            spawned_workers: 0,
            nodes: None,
        };
        for i in 0..schedulers {
            let s = fleet.spawn_scheduler(i)?;
            fleet.schedulers.push(s);
        }
        for _ in 0..workers {
            let w = fleet.new_worker()?;
            fleet.workers.push(w);
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
        let flags: [(&str, &OsStr); 8] = [
            ("--amqp-addr", a.amqp_addr.as_ref()),
            ("--namespace", a.namespace.as_ref()),
            ("--dir", a.dir.as_ref()),
            ("--id", id.as_ref()),
            ("--store", a.store.as_ref()),
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
        Ok(())
    }

    /// Replaces workers that died by themselves (the poison kills them).
    pub fn revive(&mut self) -> anyhow::Result<usize> {
        let mut revived = 0;
        for i in 0..self.workers.len() {
            if self.workers[i].has_exited()? {
                self.workers[i] = self.new_worker()?;
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

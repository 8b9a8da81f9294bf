//! The child-process harness shared by the programs that run Warren as an
//! operator would, in order to measure it (`warren-bench`) or break it
//! (`chaos`): each program re-executes itself as the scheduler and the
//! workers, so that it can stop, kill and measure them as separate
//! processes while one binary holds everything.
//!
//! Layout:
//! - `child`: the parent's side. [`Launcher`] starts this program again
//!   with a child's arguments, its output in a log file; [`Child`] is such
//!   a process: SIGTERM or SIGKILL, reaping, CPU and peak memory.
//! - `serve`: the child's side. A scheduler or a worker run until SIGTERM.
//! - `procfs`: CPU seconds and peak resident memory of any process, and
//!   finding a process by name (the local broker), from `/proc`.
//! - `namespace`: a run's fresh namespace, deleted from the broker after.
//! - `store`: the schedulers' PostgreSQL store seen from outside: the
//!   owner of a partition, dropping a run's schema.
//! - `link`: a cuttable TCP link between a process under test and a
//!   service (a silent network split, a delay, a reset).
//! - `pg_cluster`: a PostgreSQL server of a test's own, to restart.
//! - `netns`: a host of its own on this machine (a network namespace and
//!   a veth pair) whose packets a test drops at the kernel.

pub mod child;
pub mod link;
pub mod namespace;
pub mod netns;
pub mod pg_cluster;
pub mod procfs;
pub mod serve;
pub mod store;

pub use child::{Child, Launcher, Signal, signal};

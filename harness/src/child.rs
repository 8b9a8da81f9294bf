//! The parent's side of the harness: this program started again as a
//! scheduler or worker child, and the means to stop, kill and measure it.

use std::{
    ffi::{OsStr, OsString},
    fs::OpenOptions,
    io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Starts children: the running program (`current_exe`), each with its
/// stdout and stderr appended to a log file of its own in `dir`.
#[derive(Debug)]
pub struct Launcher {
    exe: PathBuf,
    dir: PathBuf,
    /// Set in every child's environment.
    env: Vec<(OsString, OsString)>,
}

impl Launcher {
    /// Children of the running program, logging to `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Launcher> {
        Ok(Launcher {
            exe: std::env::current_exe()?,
            dir: dir.into(),
            env: Vec::new(),
        })
    }

    /// Sets `key` to `value` in every child's environment.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launcher {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The directory of the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the program with `args`, its output appended to
    /// `{dir}/{log}.log` (a child started again under the same name
    /// continues the same log).
    pub fn spawn<I, S>(&self, log: &str, args: I) -> io::Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{log}.log")))?;
        let process = Command::new(&self.exe)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        Ok(Child { process })
    }
}

/// A child process. Dropping it neither stops nor reaps it: the owner
/// ends it with [`Child::terminate`] or [`Child::kill`].
#[derive(Debug)]
pub struct Child {
    process: std::process::Child,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// SIGTERM (a graceful stop: the child finishes and writes what it
    /// writes on the way out), then waits for it to exit.
    pub fn terminate(&mut self) {
        signal(self.pid(), Signal::Term);
        let _ = self.process.wait();
    }

    /// Whether it has exited (by itself or not); reaps it if so.
    pub fn has_exited(&mut self) -> io::Result<bool> {
        Ok(self.process.try_wait()?.is_some())
    }

    /// CPU seconds (user + system) it has used so far; NaN once it is gone.
    pub fn cpu_secs(&self) -> f64 {
        crate::procfs::cpu_secs(self.pid())
    }

    /// Its peak resident memory so far, in MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        crate::procfs::peak_rss_mb(self.pid())
    }
}

/// The signals a harness sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: stop gracefully.
    Term,
    /// SIGKILL: a crash, as far as the process's peers can tell.
    Kill,
}

/// Sends `signal` to `pid` (any process, not only a [`Child`]); true when
/// it was delivered. Through kill(1): the workspace forbids unsafe code,
/// and the standard library sends only SIGKILL.
pub fn signal(pid: u32, signal: Signal) -> bool {
    let flag = match signal {
        Signal::Term => "-TERM",
        Signal::Kill => "-KILL",
    };
    Command::new("kill")
        .args([flag, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

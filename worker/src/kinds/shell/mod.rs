//! The `shell` task kind: an allow-listed command, resolved at start, run
//! in a process group of its own with a checked environment, its stdin
//! written while its output is read and capped (see the parent module for
//! the decisions).

mod allow;

pub use allow::{FORBIDDEN_ENV, FORBIDDEN_ENV_PREFIXES};

use super::{ConfigError, DEFAULT_MAX_OUTPUT_BYTES, bad_input, capture::Capture};
use crate::handler::{HandlerError, Registry, TaskContext};
use allow::EnvAllow;
use serde::Deserialize;
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::Arc,
    time::Duration,
};
use tokio::process::{Child, Command};

/// How long a command's output is still read once it has exited and its
/// process group is killed: only a process that left the group can hold
/// the pipes open that long.
const EXIT_DRAIN: Duration = Duration::from_secs(1);

/// Input of a `shell` task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellInput {
    /// A command of the allow-list, as written there.
    command: String,
    #[serde(default)]
    args: Vec<String>,
    /// Added to the command's environment (the worker's `PATH` and
    /// `HOME`); each name must be on the env allow-list.
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    /// Written to the command's stdin while its output is read.
    stdin: Option<String>,
    /// Kills the command's process group after this long (the task's own
    /// `timeout_ms` also applies).
    timeout_ms: Option<u64>,
}

/// Settings of the `shell` kind.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// The commands tasks may run: names looked up in `path`, or absolute
    /// paths.
    pub commands: Vec<String>,
    /// Variables a task's `env` may set: exact names, or prefixes written
    /// `PREFIX*` (default none). Entries that name or cover a variable of
    /// [`FORBIDDEN_ENV`] or [`FORBIDDEN_ENV_PREFIXES`] are refused.
    pub env_allow: Vec<String>,
    /// Kept of each of stdout and stderr (default 1 MiB).
    pub max_output_bytes: usize,
    /// Where names are looked up at start, and the `PATH` commands get
    /// (default: the worker's own).
    pub path: Option<OsString>,
    /// The `HOME` commands get (default: the worker's own).
    pub home: Option<OsString>,
}

impl ShellConfig {
    /// `commands` with the defaults: no variable allowed, 1 MiB of each
    /// output, and the worker's own `PATH` and `HOME`, read now.
    pub fn new(commands: Vec<String>) -> ShellConfig {
        ShellConfig {
            commands,
            env_allow: Vec::new(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            path: std::env::var_os("PATH"),
            home: std::env::var_os("HOME"),
        }
    }
}

/// The `shell` kind, its allow-lists checked and its commands resolved.
#[derive(Debug)]
pub struct Shell {
    commands: BTreeMap<String, PathBuf>,
    env_allow: EnvAllow,
    max_output: usize,
    /// `PATH` and `HOME`, as every command gets them.
    base_env: Vec<(&'static str, OsString)>,
}

/// Registers `shell` with the defaults of [`ShellConfig::new`], allowed to
/// run exactly the commands in `allow`.
///
/// # Panics
///
/// When a command does not resolve (see [`Shell::new`], which returns the
/// error instead).
pub fn register_shell(registry: &mut Registry, allow: Vec<String>) {
    Shell::new(ShellConfig::new(allow))
        .unwrap_or_else(|e| panic!("{e}"))
        .register(registry);
}

impl Shell {
    /// Resolves every command to an absolute path and checks the env
    /// allow-list; fails on an entry that does not resolve or that would
    /// allow a forbidden variable.
    pub fn new(config: ShellConfig) -> Result<Shell, ConfigError> {
        let commands = allow::resolve(&config.commands, config.path.as_deref())?;
        let env_allow = EnvAllow::new(&config.env_allow)?;
        let base_env = [("PATH", config.path), ("HOME", config.home)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        Ok(Shell {
            commands,
            env_allow,
            max_output: config.max_output_bytes,
            base_env,
        })
    }

    /// Each command as allow-listed, and the file that runs for it.
    pub fn commands(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.commands.iter().map(|(k, v)| (k.as_str(), v.as_path()))
    }

    /// Registers it as the handler of `shell` tasks.
    pub fn register(self, registry: &mut Registry) {
        let shell = Arc::new(self);
        registry.register("shell", move |ctx: TaskContext| {
            let shell = shell.clone();
            async move { shell.run(ctx.input).await }
        });
    }

    fn check_env(&self, env: &BTreeMap<String, String>) -> Result<(), HandlerError> {
        let (forbidden, unlisted): (Vec<&String>, Vec<&String>) = env
            .keys()
            .filter(|k| !self.env_allow.permits(k) || allow::forbidden(k))
            .partition(|k| allow::forbidden(k));
        let names = |v: &[&String]| {
            v.iter()
                .take(20)
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !forbidden.is_empty() {
            return Err(HandlerError::fatal(format!(
                "`env` may not set {}: no task may set a variable that changes which program runs or what it loads",
                names(&forbidden)
            )));
        }
        if !unlisted.is_empty() {
            return Err(HandlerError::fatal(format!(
                "`env` may not set {}: not in this worker's shell env allow-list ({})",
                names(&unlisted),
                self.env_allow.describe()
            )));
        }
        Ok(())
    }

    async fn run(&self, input: Value) -> Result<Value, HandlerError> {
        let input: ShellInput = serde_json::from_value(input).map_err(|e| bad_input("shell", e))?;
        let Some(program) = self.commands.get(&input.command) else {
            return Err(HandlerError::fatal(format!(
                "command `{}` is not in this worker's shell allow-list ({})",
                input.command,
                self.commands.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        self.check_env(&input.env)?;
        let mut cmd = Command::new(program);
        cmd.args(&input.args)
            .env_clear()
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .envs(&input.env)
            .stdin(if input.stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // A group of its own, which a timeout or a cancel kills whole.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &input.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| HandlerError::fatal(format!("cannot start `{}`: {e}", input.command)))?;
        // Declared after `child`, so dropped first: a cancelled task kills
        // the group while its leader is not yet reaped.
        let mut group = Group::of(&child);
        let (mut stdout, mut stderr) =
            (Capture::new(self.max_output), Capture::new(self.max_output));
        let run = supervise(
            &mut child,
            &mut group,
            input.stdin,
            &mut stdout,
            &mut stderr,
        );
        let status = match input.timeout_ms {
            Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), run).await {
                Ok(status) => status,
                Err(_) => {
                    group.kill();
                    return Err(HandlerError::retryable(format!(
                        "`{}` ran over {ms} ms",
                        input.command
                    )));
                }
            },
            None => run.await,
        }
        .map_err(|e| HandlerError::retryable(format!("`{}`: {e}", input.command)))?;
        outcome(&input.command, status, &stdout, &stderr)
    }
}

/// Feeds stdin and reads stdout and stderr at once until the command
/// exits, kills what is left of its group, then takes the rest of the
/// output (for at most [`EXIT_DRAIN`]).
async fn supervise(
    child: &mut Child,
    group: &mut Group,
    stdin: Option<String>,
    stdout: &mut Capture,
    stderr: &mut Capture,
) -> std::io::Result<ExitStatus> {
    let (pipe_in, pipe_out, pipe_err) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let write = async move {
        if let (Some(text), Some(mut pipe)) = (stdin, pipe_in) {
            use tokio::io::AsyncWriteExt;
            // A command that exits without reading its input is not an
            // error. Dropping the pipe then closes the command's stdin.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
    };
    let io = async {
        tokio::join!(
            write,
            read_into(stdout, pipe_out),
            read_into(stderr, pipe_err)
        )
    };
    tokio::pin!(io);
    let mut io_done = false;
    let status = loop {
        tokio::select! {
            _ = &mut io, if !io_done => io_done = true,
            status = child.wait() => break status?,
        }
    };
    // Background children would keep the pipes open and live on.
    group.kill();
    if !io_done {
        let _ = tokio::time::timeout(EXIT_DRAIN, io).await;
    }
    Ok(status)
}

async fn read_into(capture: &mut Capture, pipe: Option<impl tokio::io::AsyncRead + Unpin>) {
    if let Some(pipe) = pipe {
        capture.drain(pipe).await;
    }
}

/// The command's process group, killed (SIGKILL) once, at the latest when
/// this is dropped.
struct Group(Option<rustix::process::Pid>);

impl Group {
    fn of(child: &Child) -> Group {
        Group(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw),
        )
    }

    /// Before the leader is reaped its id cannot be reused, so this reaches
    /// exactly its group. After (the command has exited), the id stays
    /// taken while any member of the group lives; once none does the kill
    /// finds no group (ids are handed out in turn, so a new group of that
    /// id within these microseconds would take the whole id space cycling).
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // No such group: everything in it has already ended.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

fn outcome(
    command: &str,
    status: ExitStatus,
    stdout: &Capture,
    stderr: &Capture,
) -> Result<Value, HandlerError> {
    let (out, err) = (stdout.text(), stderr.text());
    if status.success() {
        let mut output = json!({"exit_code": 0, "stdout": out, "stderr": err});
        for (name, capture) in [("stdout_truncated", stdout), ("stderr_truncated", stderr)] {
            if capture.truncated() {
                output[name] = json!(true);
            }
        }
        return Ok(output);
    }
    let tail: String = err
        .chars()
        .rev()
        .take(500)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "was killed by a signal".to_owned(),
    };
    let message = match tail.trim() {
        "" => format!("`{command}` {how}"),
        tail => format!("`{command}` {how}: {tail}"),
    };
    // The task's retry policy decides whether to run it again.
    Err(HandlerError::retryable(message))
}

#[cfg(test)]
mod tests;

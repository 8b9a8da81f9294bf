//! Task kinds for real work, each off until a worker enables it with an
//! allow-list:
//!
//! - `shell` ([`Shell`]): runs a command of the allow-list, directly (never
//!   through a shell interpreter), with arguments, environment, working
//!   directory, stdin and timeout from the input. Output: exit code,
//!   stdout, stderr.
//! - `http` ([`register_http_with`]): sends a request to a host of the
//!   allow-list. Output: status, headers, body (parsed when JSON), or the
//!   body alone on request.
//!
//! A task's input comes from the wire and, through templates, from the
//! outputs of earlier tasks, so neither kind trusts it beyond what the
//! worker's operator allowed. The decisions, which the README states:
//!
//! **`shell`**
//! - Each allow-list entry is resolved to an absolute path once, when the
//!   worker starts ([`Shell::new`]): a name through the worker's own `PATH`
//!   (the first directory holding an executable file of that name;
//!   directories that are not absolute are skipped), an entry with a `/`
//!   must be an absolute path to an executable file. An entry that does not
//!   resolve stops the worker at start. A task names the command as the
//!   allow-list writes it, and that resolved file runs: nothing a task
//!   sends changes which binary runs. Symbolic links are not followed at
//!   resolution, so multi-call binaries see the name they expect.
//! - The command's environment is the worker's `PATH` and `HOME` and the
//!   task's `env`, whose names must each be on the env allow-list
//!   (`WARREN_SHELL_ENV_ALLOW`: exact names, or prefixes ending in `*`;
//!   empty by default, so a task sets no variable unless the operator says
//!   which). Any other name fails the task, not retried, naming the
//!   variable. Variables that change which program runs or what it loads
//!   ([`shell::FORBIDDEN_ENV`], [`shell::FORBIDDEN_ENV_PREFIXES`]: `PATH`,
//!   `HOME`, `LD_*`, `DYLD_*`, `PYTHON*`, `PERL*`, `RUBY*`, `NODE_*`,
//!   `BASH_ENV`, `ENV`, `IFS`, `GLIBC_TUNABLES`, ...) are refused whatever
//!   the allow-list says: an allow-list entry that names or covers one
//!   stops the worker at start. Names compare case-insensitively against
//!   that list, exactly against the allow-list.
//! - stdin is written while stdout and stderr are read, so a filter fed
//!   more than a pipe buffer (64 KiB) cannot deadlock. Each of stdout and
//!   stderr is kept up to `WARREN_SHELL_MAX_OUTPUT_BYTES` (1 MiB) while it
//!   is read; past that the rest is read and dropped (the command is not
//!   killed for talking much; its timeout bounds it), and the output says
//!   `"stdout_truncated": true` (or `stderr_truncated`).
//! - The command runs in a process group of its own. When it exits,
//!   whatever is left of its group (background children) is killed: no
//!   process outlives its task. A timeout (the input's `timeout_ms` or the
//!   task's) or a cancelled workflow kills the whole group. A process that
//!   leaves the group (`setsid`) escapes this; once the command has exited
//!   its output is read for at most one more second. Killed processes are
//!   reaped by whoever is PID 1: the Docker image runs the worker under
//!   `tini` for that.
//!
//! **`http`**
//! - The response body is read up to `WARREN_HTTP_MAX_RESPONSE_BYTES`
//!   (1 MiB) and no further: the connection is dropped there and the
//!   output says `"body_truncated": true` (in the `full` shape).
//! - A request without `timeout_ms` gets the worker's default
//!   (`WARREN_HTTP_TIMEOUT_MS`, 30 s), from connecting to the last byte of
//!   the body.
//! - A `Host` header in the input fails the task (not retried): the host
//!   is the URL's, the one the allow-list checked. Header names and values
//!   are checked before anything is sent.
//! - A URL's userinfo (`user:password@`) is sent as basic authentication
//!   but never written into an error or a log: it shows as `***@`.
//! - Only the response headers of [`http::SAFE_RESPONSE_HEADERS`] are
//!   copied into the output (no `Set-Cookie`, no authentication headers),
//!   several values of one header joined with `, `.

mod capture;
pub mod http;
pub mod shell;

pub use http::{HttpConfig, register_http, register_http_with};
pub use shell::{Shell, ShellConfig, register_shell};

use crate::handler::HandlerError;

/// Kept of each of stdout and stderr, and of a response body, by default.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;

/// A kind's settings that cannot work: an allow-list entry that does not
/// resolve or that would let a task change what runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad_input(kind: &str, e: impl std::fmt::Display) -> HandlerError {
    HandlerError::fatal(format!("invalid `{kind}` input: {e}"))
}

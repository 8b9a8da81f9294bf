//! Task kinds for real work, each off until a worker enables it with an
//! allow-list:
//!
//! - `shell`: runs a command named in the allow-list, directly (never
//!   through a shell interpreter), with arguments, environment, working
//!   directory and timeout from the input. Output: exit code, stdout,
//!   stderr.
//! - `http`: sends a request to a host in the allow-list. Output: status,
//!   headers, body (parsed when JSON), or the body alone on request.

use crate::handler::{HandlerError, Registry, TaskContext};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

/// Output kept of each of stdout and stderr, and of a response body.
const MAX_CAPTURE: usize = 1 << 20;

fn bad_input(kind: &str, e: impl std::fmt::Display) -> HandlerError {
    HandlerError::fatal(format!("invalid `{kind}` input: {e}"))
}

/// Input of a `shell` task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellInput {
    /// A command of the allow-list, as written there (a name looked up in
    /// `PATH`, or an absolute path).
    command: String,
    #[serde(default)]
    args: Vec<String>,
    /// Set in the command's environment, which otherwise holds only `PATH`
    /// and `HOME` of the worker.
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    /// Written to the command's stdin.
    stdin: Option<String>,
    /// Kills the command after this long (the task's own `timeout_ms` also
    /// applies).
    timeout_ms: Option<u64>,
}

/// Registers `shell`, allowed to run exactly the commands in `allow`.
pub fn register_shell(registry: &mut Registry, allow: Vec<String>) {
    let allow = Arc::new(allow);
    registry.register("shell", move |ctx: TaskContext| {
        let allow = allow.clone();
        async move { shell(&allow, ctx.input).await }
    });
}

async fn shell(allow: &[String], input: Value) -> Result<Value, HandlerError> {
    let input: ShellInput = serde_json::from_value(input).map_err(|e| bad_input("shell", e))?;
    if !allow.contains(&input.command) {
        return Err(HandlerError::fatal(format!(
            "command `{}` is not in this worker's shell allow-list ({})",
            input.command,
            allow.join(", ")
        )));
    }
    let mut cmd = tokio::process::Command::new(&input.command);
    cmd.args(&input.args)
        .env_clear()
        .envs(
            ["PATH", "HOME"]
                .into_iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v))),
        )
        .envs(&input.env)
        .stdin(if input.stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // A cancelled or timed-out task kills its command.
        .kill_on_drop(true);
    if let Some(dir) = &input.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| HandlerError::fatal(format!("cannot start `{}`: {e}", input.command)))?;
    if let (Some(text), Some(mut stdin)) = (input.stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        // A command that exits without reading its input is not an error.
        let _ = stdin.write_all(text.as_bytes()).await;
    }
    let run = child.wait_with_output();
    let out = match input.timeout_ms {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), run)
            .await
            .map_err(|_| {
                HandlerError::retryable(format!("`{}` ran over {ms} ms", input.command))
            })?,
        None => run.await,
    }
    .map_err(|e| HandlerError::retryable(format!("`{}`: {e}", input.command)))?;
    let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(MAX_CAPTURE)]).into_owned();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    match out.status.code() {
        Some(0) => Ok(json!({"exit_code": 0, "stdout": stdout, "stderr": stderr})),
        code => {
            let tail: String = stderr
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let how = code.map_or("was killed by a signal".to_owned(), |c| {
                format!("exited with code {c}")
            });
            // The task's retry policy decides whether to run it again.
            Err(HandlerError::retryable(format!(
                "`{}` {how}: {}",
                input.command,
                tail.trim()
            )))
        }
    }
}

/// Input of an `http` task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpInput {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Sent as JSON.
    body: Option<Value>,
    /// Sent as is (text), instead of `body`.
    body_text: Option<String>,
    /// Accepted status codes (a number or a list); default any 2xx.
    expect_status: Option<Value>,
    timeout_ms: Option<u64>,
    /// `full` (default): `{status, headers, body}`; `body`: the body alone.
    #[serde(default)]
    output: OutputShape,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum OutputShape {
    #[default]
    Full,
    Body,
}

fn default_method() -> String {
    "GET".into()
}

/// Registers `http`, allowed to reach exactly the hosts in `allow`: an
/// entry `host` admits any port of that host, `host:port` only that port.
pub fn register_http(registry: &mut Registry, allow: Vec<String>) {
    let allow = Arc::new(allow);
    let client = reqwest::Client::builder()
        // Redirects could lead outside the allow-list.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client with the default TLS roots");
    registry.register("http", move |ctx: TaskContext| {
        let (allow, client) = (allow.clone(), client.clone());
        async move { http(&allow, &client, ctx.input).await }
    });
}

fn allowed(allow: &[String], url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default();
    allow.iter().any(|entry| match entry.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h == host && p.parse().ok() == port,
        _ => entry == host,
    })
}

async fn http(
    allow: &[String],
    client: &reqwest::Client,
    input: Value,
) -> Result<Value, HandlerError> {
    let input: HttpInput = serde_json::from_value(input).map_err(|e| bad_input("http", e))?;
    let url =
        reqwest::Url::parse(&input.url).map_err(|e| bad_input("http", format!("url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || !allowed(allow, &url) {
        return Err(HandlerError::fatal(format!(
            "{} is not allowed: this worker's http allow-list is {}",
            input.url,
            allow.join(", ")
        )));
    }
    let method = reqwest::Method::from_bytes(input.method.to_uppercase().as_bytes())
        .map_err(|e| bad_input("http", format!("method: {e}")))?;
    let mut req = client.request(method, url);
    for (k, v) in &input.headers {
        req = req.header(k, v);
    }
    req = match (input.body, input.body_text) {
        (Some(_), Some(_)) => {
            return Err(bad_input("http", "give `body` or `body_text`, not both"));
        }
        (Some(b), None) => req.json(&b),
        (None, Some(t)) => req.body(t),
        (None, None) => req,
    };
    if let Some(ms) = input.timeout_ms {
        req = req.timeout(Duration::from_millis(ms));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| HandlerError::retryable(format!("{}: {e}", input.url)))?;
    let status = resp.status().as_u16();
    let headers: Map<String, Value> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let is_json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| HandlerError::retryable(format!("{}: reading the body: {e}", input.url)))?;
    let bytes = &bytes[..bytes.len().min(MAX_CAPTURE)];
    let body = match is_json.then(|| serde_json::from_slice::<Value>(bytes)) {
        Some(Ok(v)) => v,
        _ => Value::String(String::from_utf8_lossy(bytes).into_owned()),
    };
    let expected = match &input.expect_status {
        None => (200..300).contains(&status),
        Some(Value::Number(n)) => n.as_u64() == Some(u64::from(status)),
        Some(Value::Array(list)) => list.iter().any(|n| n.as_u64() == Some(u64::from(status))),
        Some(other) => return Err(bad_input("http", format!("expect_status: {other}"))),
    };
    if !expected {
        let message = format!(
            "{} {} answered {status}: {}",
            input.method.to_uppercase(),
            input.url,
            body.to_string().chars().take(500).collect::<String>()
        );
        // Overload and server errors may pass; anything else will not.
        return Err(if status == 429 || status >= 500 {
            HandlerError::retryable(message)
        } else {
            HandlerError::fatal(message)
        });
    }
    Ok(match input.output {
        OutputShape::Body => body,
        OutputShape::Full => json!({"status": status, "headers": headers, "body": body}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_allow_list_matches_host_or_host_and_port() {
        let allow = vec!["api.example.com".to_owned(), "127.0.0.1:8081".to_owned()];
        let ok = |u: &str| allowed(&allow, &reqwest::Url::parse(u).unwrap());
        assert!(ok("https://api.example.com/orders"));
        assert!(ok("http://api.example.com:9000/x"));
        assert!(ok("http://127.0.0.1:8081/orders"));
        assert!(!ok("http://127.0.0.1:8082/orders"));
        assert!(!ok("http://127.0.0.1/orders"));
        assert!(!ok("https://evil.example.com/"));
        assert!(!ok("https://api.example.com.evil.net/"));
    }

    #[tokio::test]
    async fn shell_runs_only_allowed_commands_without_a_shell() {
        let allow = vec!["echo".to_owned()];
        let out = shell(
            &allow,
            json!({"command": "echo", "args": ["a b", "$HOME;", "c"]}),
        )
        .await
        .unwrap();
        // Arguments reach the command as they are: no word splitting, no
        // expansion, no command separators.
        assert_eq!(out["stdout"], "a b $HOME; c\n");
        assert_eq!(out["exit_code"], 0);
        let err = shell(&allow, json!({"command": "sh", "args": ["-c", "id"]}))
            .await
            .unwrap_err();
        assert!(
            !err.retryable
                && err
                    .message
                    .contains("not in this worker's shell allow-list")
        );
        let err = shell(&allow, json!({"command": "echo", "shell": true}))
            .await
            .unwrap_err();
        assert!(err.message.contains("unknown field `shell`"), "{err}");
    }
}

//! The `http` task kind: a request to an allow-listed host.

use super::bad_input;
use crate::handler::{HandlerError, Registry, TaskContext};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

/// Kept of a response body.
const MAX_CAPTURE: usize = super::DEFAULT_MAX_OUTPUT_BYTES;

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
}

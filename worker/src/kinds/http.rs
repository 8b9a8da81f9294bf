//! The `http` task kind: a request to an allow-listed host, with a default
//! timeout, the body capped while it is read, no `Host` override, URL
//! userinfo kept out of errors and only safe response headers kept (see
//! the parent module for the decisions).

use super::{DEFAULT_MAX_OUTPUT_BYTES, bad_input, capture::Capture};
use crate::handler::{HandlerError, Registry, TaskContext};
use reqwest::{
    Url,
    header::{HeaderName, HeaderValue},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

/// The timeout of a request whose input gives none, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The response headers copied into a task's output (lower case); every
/// other one (`Set-Cookie`, `WWW-Authenticate`, `Authorization`-like and
/// custom headers) is left out.
pub const SAFE_RESPONSE_HEADERS: &[&str] = &[
    "age",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expires",
    "last-modified",
    "link",
    "location",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
    "vary",
    "x-correlation-id",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-request-id",
];

/// Input of an `http` task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpInput {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    /// Sent with the request; `Host` is refused.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Sent as JSON.
    body: Option<Value>,
    /// Sent as is (text), instead of `body`.
    body_text: Option<String>,
    /// Accepted status codes (a number or a list); default any 2xx.
    expect_status: Option<Value>,
    /// From connecting to the end of the body (default: the worker's).
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

/// Settings of the `http` kind.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The hosts tasks may reach: an entry `host` admits any port of that
    /// host, `host:port` only that port.
    pub hosts: Vec<String>,
    /// The timeout of a request whose input gives none (default 30 s).
    pub default_timeout: Duration,
    /// Kept of a response body; the rest is not read (default 1 MiB).
    pub max_body_bytes: usize,
}

impl HttpConfig {
    /// `hosts` with the default timeout and body cap.
    pub fn new(hosts: Vec<String>) -> HttpConfig {
        HttpConfig {
            hosts,
            default_timeout: DEFAULT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// Registers `http` with the defaults of [`HttpConfig::new`], allowed to
/// reach exactly the hosts in `allow`.
pub fn register_http(registry: &mut Registry, allow: Vec<String>) {
    register_http_with(registry, HttpConfig::new(allow));
}

/// Registers `http` with `config`.
pub fn register_http_with(registry: &mut Registry, config: HttpConfig) {
    let client = reqwest::Client::builder()
        // Redirects could lead outside the allow-list.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client with the default TLS roots");
    let http = Arc::new(Http { config, client });
    registry.register("http", move |ctx: TaskContext| {
        let http = http.clone();
        async move { http.run(ctx.input).await }
    });
}

struct Http {
    config: HttpConfig,
    client: reqwest::Client,
}

fn allowed(allow: &[String], url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default();
    allow.iter().any(|entry| match entry.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h == host && p.parse().ok() == port,
        _ => entry == host,
    })
}

/// The URL as errors show it: userinfo replaced by `***`.
fn redacted(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Only a URL that cannot have userinfo refuses these, and it has none.
    let _ = shown.set_password(None);
    let _ = shown.set_username("***");
    shown.to_string()
}

/// An error and its causes, one after the other, without the URL reqwest
/// adds, and with any userinfo of `url` cut out should a cause repeat it.
fn describe(e: reqwest::Error, url: &Url) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if let Some(password) = url.password().filter(|p| !p.is_empty()) {
        text = text.replace(&format!("{}:{password}@", url.username()), "***@");
    }
    text
}

/// The safe response headers, several values of one joined with `, `.
fn safe_headers(headers: &reqwest::header::HeaderMap) -> Map<String, Value> {
    let mut kept = Map::new();
    for name in SAFE_RESPONSE_HEADERS {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if !values.is_empty() {
            kept.insert((*name).to_owned(), Value::String(values.join(", ")));
        }
    }
    kept
}

impl Http {
    async fn run(&self, input: Value) -> Result<Value, HandlerError> {
        let input: HttpInput = serde_json::from_value(input).map_err(|e| bad_input("http", e))?;
        let url = Url::parse(&input.url).map_err(|e| bad_input("http", format!("url: {e}")))?;
        let shown = redacted(&url);
        if !matches!(url.scheme(), "http" | "https") || !allowed(&self.config.hosts, &url) {
            return Err(HandlerError::fatal(format!(
                "{shown} is not allowed: this worker's http allow-list is {}",
                self.config.hosts.join(", ")
            )));
        }
        let method = reqwest::Method::from_bytes(input.method.to_uppercase().as_bytes())
            .map_err(|e| bad_input("http", format!("method: {e}")))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &input.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| bad_input("http", format!("header `{k}`: {e}")))?;
            if name == reqwest::header::HOST {
                return Err(bad_input(
                    "http",
                    "the `Host` header cannot be set: it is the URL's host, which the allow-list checked",
                ));
            }
            let value = HeaderValue::from_str(v)
                .map_err(|e| bad_input("http", format!("header `{k}`: {e}")))?;
            headers.append(name, value);
        }
        let timeout = input
            .timeout_ms
            .map_or(self.config.default_timeout, Duration::from_millis);
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .headers(headers)
            .timeout(timeout);
        req = match (input.body, input.body_text) {
            (Some(_), Some(_)) => {
                return Err(bad_input("http", "give `body` or `body_text`, not both"));
            }
            (Some(b), None) => req.json(&b),
            (None, Some(t)) => req.body(t),
            (None, None) => req,
        };
        let failed = |e: reqwest::Error, what: &str| {
            let why = if e.is_timeout() {
                format!("no complete answer within {} ms", timeout.as_millis())
            } else {
                describe(e, &url)
            };
            HandlerError::retryable(format!("{method} {shown}: {what}{why}"))
        };
        let mut resp = req.send().await.map_err(|e| failed(e, ""))?;
        let status = resp.status().as_u16();
        let headers = safe_headers(resp.headers());
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("json"));
        // Read up to the cap and no further: the rest is never received.
        let mut kept = Capture::new(self.config.max_body_bytes);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| failed(e, "reading the body: "))?
        {
            kept.push(&chunk);
            if kept.truncated() {
                break;
            }
        }
        drop(resp);
        let body = match is_json.then(|| serde_json::from_slice::<Value>(kept.bytes())) {
            Some(Ok(v)) => v,
            _ => Value::String(kept.text()),
        };
        let expected = match &input.expect_status {
            None => (200..300).contains(&status),
            Some(Value::Number(n)) => n.as_u64() == Some(u64::from(status)),
            Some(Value::Array(list)) => list.iter().any(|n| n.as_u64() == Some(u64::from(status))),
            Some(other) => return Err(bad_input("http", format!("expect_status: {other}"))),
        };
        if !expected {
            let message = format!(
                "{method} {shown} answered {status}: {}",
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
            OutputShape::Full => {
                let mut out = json!({"status": status, "headers": headers, "body": body});
                if kept.truncated() {
                    out["body_truncated"] = json!(true);
                }
                out
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_allow_list_matches_host_or_host_and_port() {
        let allow = vec!["api.example.com".to_owned(), "127.0.0.1:8081".to_owned()];
        let ok = |u: &str| allowed(&allow, &Url::parse(u).unwrap());
        assert!(ok("https://api.example.com/orders"));
        assert!(ok("http://api.example.com:9000/x"));
        assert!(ok("http://127.0.0.1:8081/orders"));
        assert!(!ok("http://127.0.0.1:8082/orders"));
        assert!(!ok("http://127.0.0.1/orders"));
        assert!(!ok("https://evil.example.com/"));
        assert!(!ok("https://api.example.com.evil.net/"));
        // Userinfo is not part of the host.
        assert!(ok("http://api.example.com:x@127.0.0.1:8081/"));
        assert!(!ok("http://127.0.0.1:8081@evil.example.com/"));
    }

    #[test]
    fn userinfo_never_shows() {
        for (url, shown) in [
            (
                "http://user:s3cret@h.example/a?b=1",
                "http://***@h.example/a?b=1",
            ),
            ("http://user@h.example/", "http://***@h.example/"),
            (
                "https://:s3cret@h.example:8443/",
                "https://***@h.example:8443/",
            ),
            ("http://h.example/p", "http://h.example/p"),
        ] {
            assert_eq!(redacted(&Url::parse(url).unwrap()), shown);
        }
    }

    #[test]
    fn only_safe_response_headers_are_kept() {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("set-cookie", "session=abc"),
            ("set-cookie", "other=def"),
            ("www-authenticate", "Bearer"),
            ("proxy-authenticate", "Basic"),
            ("authorization", "Bearer x"),
            ("x-api-key", "k"),
            ("link", "<a>; rel=next"),
            ("link", "<b>; rel=prev"),
            ("etag", "\"1\""),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        assert_eq!(
            Value::Object(safe_headers(&h)),
            json!({"content-type": "application/json", "etag": "\"1\"",
                "link": "<a>; rel=next, <b>; rel=prev"})
        );
    }
}

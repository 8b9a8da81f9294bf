//! The names the endpoint answers to. A page on another site can reach a
//! "localhost only" endpoint by DNS rebinding (its own name, resolved
//! again to 127.0.0.1), but its requests still carry its own name in
//! `Host`: a request whose `Host` is not one of the endpoint's names is
//! answered 421 Misdirected Request, one without `Host` 400.
//!
//! The names: `localhost`, `127.0.0.1` and `[::1]` (no page elsewhere
//! can send these), the address the endpoint listens on (unless
//! unspecified, `0.0.0.0` or `[::]`), and those configured
//! (`WARREN_HTTP_HOSTS`). A name without a port matches any port (a
//! published or forwarded port may differ from the one listened on), one
//! with a port that port only. IP addresses are compared as addresses
//! (`[::1]` is `[0:0::1]`), names without regard to case.

use super::error;
use crate::metrics::Metrics;
use axum::{
    extract::{Request, State},
    http::{StatusCode, Version, header},
    middleware::Next,
    response::Response,
};
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

/// Most names configured.
pub const MAX_HOSTS: usize = 100;

/// A host name or address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Ip(IpAddr),
    /// Lowercase.
    Dns(String),
}

/// One name the endpoint answers to, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    name: Name,
    port: Option<u16>,
}

/// The names configured (`WARREN_HTTP_HOSTS`), beside the loopback names
/// and the address listened on, which are always allowed.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    allowed: Vec<Allowed>,
}

/// An entry of the configured list that is not a `host[:port]`.
#[derive(Debug, thiserror::Error)]
#[error("`{entry}` is not a host or host:port ({reason})")]
pub struct HostError {
    pub entry: String,
    pub reason: &'static str,
}

impl fmt::Display for Hosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.allowed.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match &a.name {
                Name::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
                Name::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
                Name::Dns(n) => f.write_str(n)?,
            }
            if let Some(p) = a.port {
                write!(f, ":{p}")?;
            }
        }
        Ok(())
    }
}

impl Hosts {
    /// A comma-separated list of `host` or `host:port` (`[v6]` for IPv6
    /// addresses); blanks between entries are ignored.
    pub fn parse(list: &str) -> Result<Hosts, HostError> {
        let mut hosts = Hosts::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let fail = |reason| HostError {
                entry: entry.to_owned(),
                reason,
            };
            if hosts.allowed.len() >= MAX_HOSTS {
                return Err(fail("more than 100 names"));
            }
            let allowed = parse_host(entry).map_err(fail)?;
            hosts.allowed.push(allowed);
        }
        Ok(hosts)
    }

    /// These names, the loopback names and `bound` (the address listened
    /// on) unless it is unspecified.
    pub(super) fn with_defaults(&self, bound: SocketAddr) -> Hosts {
        let any_port = |name| Allowed { name, port: None };
        let mut allowed = vec![
            any_port(Name::Dns("localhost".into())),
            any_port(Name::Ip(IpAddr::from([127, 0, 0, 1]))),
            any_port(Name::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))),
        ];
        if !bound.ip().is_unspecified() {
            allowed.push(any_port(Name::Ip(bound.ip())));
        }
        allowed.extend(self.allowed.iter().cloned());
        allowed.dedup();
        Hosts { allowed }
    }

    /// Whether a `Host` value (or a request target's authority) is one of
    /// these names.
    pub(super) fn allows(&self, host: &str) -> bool {
        let Ok(asked) = parse_host(host) else {
            return false;
        };
        self.allowed
            .iter()
            .any(|a| a.name == asked.name && a.port.is_none_or(|p| Some(p) == asked.port))
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host(s: &str) -> Result<Allowed, &'static str> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']').ok_or("an unclosed `[`")?;
            let ip: Ipv6Addr = ip.parse().map_err(|_| "not an IPv6 address in `[]`")?;
            (Name::Ip(IpAddr::V6(ip)), after)
        }
        None => {
            let end = s.find(':').unwrap_or(s.len());
            let (host, after) = s.split_at(end);
            if host.is_empty() {
                return Err("no host");
            }
            if !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err("a host name has letters, digits, `-` and `.` only");
            }
            let name = match host.parse() {
                Ok(ip) => Name::Ip(IpAddr::V4(ip)),
                Err(_) => Name::Dns(host.to_ascii_lowercase()),
            };
            (name, after)
        }
    };
    let port = match port {
        "" => None,
        p => {
            let digits = p.strip_prefix(':').ok_or("garbage after the host")?;
            if digits.is_empty() {
                None // `host:`: an empty port is no port (RFC 3986)
            } else if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the port is a number");
            } else {
                Some(digits.parse().map_err(|_| "the port is at most 65535")?)
            }
        }
    };
    Ok(Allowed { name: host, port })
}

/// What the Host check needs.
#[derive(Clone)]
pub(super) struct HostCheck {
    pub(super) hosts: Arc<Hosts>,
    pub(super) metrics: Arc<Metrics>,
}

/// Middleware: 400 without exactly one `Host` (HTTP/1.1 requires it; an
/// HTTP/1.0 request without one is refused too), 421 when it (or the
/// request target's authority, which takes its place when the target is
/// absolute) is not one of the endpoint's names.
pub(super) async fn check(State(c): State<HostCheck>, req: Request, next: Next) -> Response {
    let mut values = req.headers().get_all(header::HOST).iter();
    let (first, second) = (values.next(), values.next());
    if second.is_some() {
        Metrics::add(&c.metrics.http_misdirected, 1);
        return error(StatusCode::BAD_REQUEST, "more than one Host header");
    }
    let host = match (req.uri().authority(), first) {
        (Some(authority), _) => authority.as_str().to_owned(),
        (None, Some(h)) => match h.to_str() {
            Ok(h) => h.to_owned(),
            Err(_) => {
                Metrics::add(&c.metrics.http_misdirected, 1);
                return error(StatusCode::BAD_REQUEST, "a Host header that is not text");
            }
        },
        (None, None) => {
            Metrics::add(&c.metrics.http_misdirected, 1);
            let message = if req.version() == Version::HTTP_11 {
                "HTTP/1.1 requires a Host header"
            } else {
                "a Host header is required"
            };
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    if !c.hosts.allows(&host) {
        Metrics::add(&c.metrics.http_misdirected, 1);
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "this endpoint does not answer to that Host (add it to WARREN_HTTP_HOSTS)",
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether each `Host` is let through by `configured`, listening on
    /// `bound`.
    fn check(configured: &str, bound: &str, cases: &[(&str, bool)]) {
        let hosts = Hosts::parse(configured)
            .unwrap()
            .with_defaults(bound.parse().unwrap());
        for (host, allowed) in cases {
            assert_eq!(
                hosts.allows(host),
                *allowed,
                "Host `{host}` with {configured:?} on {bound} ({hosts})"
            );
        }
    }

    #[test]
    fn loopback_names_and_the_bound_address_by_default() {
        check(
            "",
            "127.0.0.1:8080",
            &[
                ("localhost", true),
                ("localhost:8080", true),
                ("LocalHost:9999", true),
                ("127.0.0.1", true),
                ("127.0.0.1:8080", true),
                ("[::1]", true),
                ("[::1]:8080", true),
                ("[0:0:0:0:0:0:0:1]:8080", true),
                ("evil.example", false),
                ("evil.example:8080", false),
                ("localhost.evil.example", false),
                ("localhost.", false),
                ("127.0.0.2:8080", false),
                ("127.1", false),
                ("0x7f.0.0.1", false),
                ("", false),
                (":8080", false),
                ("localhost:80:80", false),
                ("localhost:99999", false),
                ("localhost:+80", false),
                ("[::1", false),
                ("::1", false),
                ("user@localhost", false),
                ("localhost/x", false),
            ],
        );
        check(
            "",
            "10.1.2.3:8080",
            &[
                ("10.1.2.3:8080", true),
                ("10.1.2.3", true),
                ("10.1.2.4", false),
            ],
        );
        check(
            "",
            "[fe80::1]:8080",
            &[("[FE80::1]:8080", true), ("[fe80::2]:8080", false)],
        );
        // Listening on every address names none of them.
        check(
            "",
            "0.0.0.0:8080",
            &[("0.0.0.0:8080", false), ("localhost:8080", true)],
        );
    }

    #[test]
    fn configured_names() {
        check(
            " warren.example.com , ops.example:8443,[2001:db8::5],,10.0.0.9:81 ",
            "0.0.0.0:8080",
            &[
                ("warren.example.com", true),
                ("WARREN.example.com:8080", true),
                ("ops.example:8443", true),
                ("ops.example", false),
                ("ops.example:8080", false),
                ("[2001:db8::5]:8080", true),
                ("10.0.0.9:81", true),
                ("10.0.0.9:80", false),
                ("example.com", false),
                ("localhost:8080", true),
            ],
        );
        let shown = Hosts::parse("a.example, [2001:db8::5]:1").unwrap();
        assert_eq!(shown.to_string(), "a.example,[2001:db8::5]:1");
    }

    #[test]
    fn bad_entries() {
        for (list, reason) in [
            ("http://x.example", "the port is a number"),
            ("[::1]x", "garbage after the host"),
            ("x.example/path", "letters, digits"),
            ("*.example.com", "letters, digits"),
            ("x.example:port", "the port is a number"),
            ("x.example:70000", "at most 65535"),
            ("[::1", "unclosed"),
            ("[nope]", "IPv6"),
            (":80", "no host"),
            ("a b", "letters, digits"),
        ] {
            let e = Hosts::parse(list).unwrap_err().to_string();
            assert!(e.contains(reason), "{list:?}: {e}");
        }
        let many = vec!["a.example"; MAX_HOSTS + 1].join(",");
        assert!(Hosts::parse(&many).is_err());
    }
}

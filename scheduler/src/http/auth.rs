//! Who may use the endpoint: bearer tokens of two scopes, and the rule
//! that an endpoint without tokens listens on loopback only.
//!
//! Tokens come from the operator (a file of `scope token` lines, or one
//! token per scope from the environment: `main.rs` reads them); only
//! their SHA-256 digests are kept, a presented token's digest is compared
//! with every one in constant time, and `Debug` shows how many of each
//! scope there are, never a token.

use super::error;
use crate::metrics::Metrics;
use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use sha2::{Digest, Sha256};
use std::{fmt, net::SocketAddr, sync::Arc};
use subtle::ConstantTimeEq;

/// Shortest token accepted: 16 characters (`openssl rand -hex 32` makes
/// 64).
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted, in characters.
pub const MAX_TOKEN_LEN: usize = 512;
/// Most tokens configured at once (each request is compared with all).
pub const MAX_TOKENS: usize = 1_000;

/// What a token allows. `Admin` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// The status API (`/api/...`) and `/metrics`.
    Read,
    /// Read, and the actions (`POST /api/workflows/{id}/cancel`).
    Admin,
}

impl Scope {
    /// `read` or `admin`, as in the tokens file and `/api/whoami`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// The endpoint's bearer tokens, as SHA-256 digests with their scope.
/// Empty (the default): the endpoint listens on loopback only and is
/// read-only.
#[derive(Clone, Default)]
pub struct Tokens {
    digests: Vec<(Scope, [u8; 32])>,
}

/// A token or a line of the tokens file that cannot be used. Never
/// contains a token.
#[derive(Debug, thiserror::Error)]
#[error("{whence}: {reason}")]
pub struct TokenError {
    /// Where: the variable, or the line of the file.
    pub whence: String,
    pub reason: String,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("read", &self.count(Scope::Read))
            .field("admin", &self.count(Scope::Admin))
            .finish()
    }
}

impl Tokens {
    /// Adds one token of `scope`; `whence` names where it came from in
    /// the error (`WARREN_HTTP_ADMIN_TOKEN`, `line 3`).
    pub fn add(&mut self, scope: Scope, token: &str, whence: &str) -> Result<(), TokenError> {
        let fail = |reason: String| TokenError {
            whence: whence.to_owned(),
            reason,
        };
        let len = token.chars().count();
        if len < MIN_TOKEN_LEN {
            return Err(fail(format!(
                "a token of {len} characters: at least {MIN_TOKEN_LEN} are needed \
                 (make one with `openssl rand -hex 32`)"
            )));
        }
        if len > MAX_TOKEN_LEN {
            return Err(fail(format!(
                "a token of {len} characters: at most {MAX_TOKEN_LEN}"
            )));
        }
        if !is_b64token(token) {
            return Err(fail(
                "a token may hold only letters, digits and `-._~+/`, then `=` padding \
                 (RFC 6750's b64token)"
                    .into(),
            ));
        }
        if self.digests.len() >= MAX_TOKENS {
            return Err(fail(format!("more than {MAX_TOKENS} tokens")));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if self.digests.iter().any(|(_, d)| *d == digest) {
            return Err(fail("the same token is given twice".into()));
        }
        self.digests.push((scope, digest));
        Ok(())
    }

    /// Adds the tokens of a tokens file: one `read TOKEN` or `admin
    /// TOKEN` per line; blank lines and lines starting with `#` are
    /// skipped.
    pub fn add_file(&mut self, text: &str) -> Result<(), TokenError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let whence = format!("line {}", i + 1);
            let mut words = line.split_whitespace();
            let (Some(scope), Some(token), None) = (words.next(), words.next(), words.next())
            else {
                return Err(TokenError {
                    whence,
                    reason: "expected `read TOKEN` or `admin TOKEN`".into(),
                });
            };
            let Some(scope) = Scope::parse(scope) else {
                return Err(TokenError {
                    whence,
                    reason: "the scope is `read` or `admin`".into(),
                });
            };
            self.add(scope, token, &whence)?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// How many tokens of `scope`.
    pub fn count(&self, scope: Scope) -> usize {
        self.digests.iter().filter(|(s, _)| *s == scope).count()
    }

    /// The scope of `presented`, if it is one of the tokens. Its digest
    /// is compared with every token's in constant time, so the time taken
    /// says nothing of how much of a token was right (nor, digests being
    /// of fixed length, of its length).
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (scope, d) in &self.digests {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(*scope);
            }
        }
        found
    }
}

/// RFC 6750's `b64token`: `ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
/// "/"`, then `=`s.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Refuses an endpoint that would serve past this host without tokens:
/// anyone who reached it could read every workflow's inputs and outputs.
pub fn check_exposure(addr: SocketAddr, tokens: &Tokens) -> Result<(), String> {
    if tokens.is_empty() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to serve HTTP on {addr} without tokens: anyone who can reach it could \
             read every workflow; set WARREN_HTTP_TOKENS_FILE (or WARREN_HTTP_READ_TOKEN / \
             WARREN_HTTP_ADMIN_TOKEN), or listen on loopback (127.0.0.1 or [::1])"
        ));
    }
    Ok(())
}

/// Why a request has no scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// No `Authorization: Bearer` header (or more than one).
    NoToken,
    /// A token that is not one of the endpoint's.
    WrongToken,
}

/// The scope a request's `Authorization: Bearer` header grants. Without
/// tokens configured, everyone gets `Read` (the endpoint is on loopback).
fn granted(tokens: &Tokens, headers: &HeaderMap) -> Result<Scope, Refused> {
    if tokens.is_empty() {
        return Ok(Scope::Read);
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Refused::NoToken);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    token
        .and_then(|t| tokens.scope_of(t))
        .ok_or(Refused::WrongToken)
}

/// 401 with the `WWW-Authenticate: Bearer` challenge (RFC 6750).
fn unauthorized(why: Refused) -> Response {
    let (challenge, message) = match why {
        Refused::NoToken => (
            "Bearer realm=\"warren\"",
            "a bearer token is needed: `Authorization: Bearer TOKEN`",
        ),
        Refused::WrongToken => (
            "Bearer realm=\"warren\", error=\"invalid_token\"",
            "the bearer token is not one of this endpoint's",
        ),
    };
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// 403: a valid token without the scope the route needs.
fn forbidden(tokens: &Tokens, needed: Scope) -> Response {
    let message = if tokens.is_empty() {
        "actions need an admin token, and this endpoint has none configured \
         (WARREN_HTTP_ADMIN_TOKEN or an `admin` line in WARREN_HTTP_TOKENS_FILE)"
            .to_owned()
    } else {
        format!("this needs a token of scope `{}`", needed.as_str())
    };
    let mut r = error(StatusCode::FORBIDDEN, message);
    let challenge = format!(
        "Bearer realm=\"warren\", error=\"insufficient_scope\", scope=\"{}\"",
        needed.as_str()
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// What a request was granted: its scope, and whether by a token (or by
/// being on loopback without tokens). A request extension.
#[derive(Debug, Clone, Copy)]
pub(super) struct Granted {
    pub(super) scope: Scope,
    pub(super) token: bool,
}

/// What a route needs, for [`require`].
#[derive(Clone)]
pub(super) struct Needs {
    pub(super) tokens: Arc<Tokens>,
    pub(super) scope: Scope,
    pub(super) metrics: Arc<Metrics>,
}

/// Middleware: lets through requests whose token has the route's scope
/// (401 without a valid one, 403 with one of too small a scope), and
/// records the scope granted as a request extension (read by
/// `/api/whoami`).
pub(super) async fn require(State(needs): State<Needs>, mut req: Request, next: Next) -> Response {
    let m = &needs.metrics;
    match granted(&needs.tokens, req.headers()) {
        Err(why) => {
            Metrics::add(&m.http_unauthorized, 1);
            unauthorized(why)
        }
        Ok(scope) if scope < needs.scope => {
            Metrics::add(&m.http_forbidden, 1);
            forbidden(&needs.tokens, needs.scope)
        }
        Ok(scope) => {
            req.extensions_mut().insert(Granted {
                scope,
                token: !needs.tokens.is_empty(),
            });
            next.run(req).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    /// Parses `file`; the tokens it holds, or the error.
    fn check(file: &str, expected: Result<(usize, usize), &str>) {
        let mut t = Tokens::default();
        let got = t
            .add_file(file)
            .map(|()| (t.count(Scope::Read), t.count(Scope::Admin)))
            .map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{file:?}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got:?} lacks {want:?}"),
            (got, want) => panic!("{file:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn token_files() {
        check("", Ok((0, 0)));
        check("# comment\n\n   \n", Ok((0, 0)));
        check(&format!("read {A}\nadmin {B}\n"), Ok((1, 1)));
        check(&format!("  read\t{A}  \r\n# x\nadmin   {B}"), Ok((1, 1)));
        check(&format!("read {A}=="), Ok((1, 0)));
        check(
            &format!("write {A}"),
            Err("line 1: the scope is `read` or `admin`"),
        );
        check(&format!("\nREAD {A}"), Err("line 2: the scope is"));
        check("read", Err("line 1: expected `read TOKEN`"));
        check(&format!("read {A} extra"), Err("line 1: expected"));
        check(A, Err("line 1: expected"));
        check(
            "read short",
            Err("line 1: a token of 5 characters: at least 16"),
        );
        check(&format!("read {}", "a".repeat(513)), Err("at most 512"));
        check(&format!("read {A}\"x"), Err("b64token"));
        check(&format!("read {A}é"), Err("b64token"));
        check(&format!("read ={A}"), Err("b64token"));
        check(
            &format!("read {A}\nadmin {A}"),
            Err("line 2: the same token is given twice"),
        );
    }

    #[test]
    fn errors_and_debug_never_show_a_token() {
        let mut t = Tokens::default();
        let e = t.add(Scope::Read, "short-secret", "WARREN_HTTP_READ_TOKEN");
        let e = e.unwrap_err().to_string();
        assert!(e.starts_with("WARREN_HTTP_READ_TOKEN: "), "{e}");
        assert!(!e.contains("short-secret"), "{e}");
        let e = t.add_file(&format!("read {A}x\"")).unwrap_err().to_string();
        assert!(!e.contains(A), "{e}");
        t.add(Scope::Admin, A, "x").unwrap();
        let shown = format!("{t:?}");
        assert_eq!(shown, "Tokens { read: 0, admin: 1 }");
    }

    #[test]
    fn a_token_grants_its_scope_only() {
        let mut t = Tokens::default();
        t.add(Scope::Read, A, "x").unwrap();
        t.add(Scope::Admin, B, "y").unwrap();
        assert_eq!(t.scope_of(A), Some(Scope::Read));
        assert_eq!(t.scope_of(B), Some(Scope::Admin));
        assert_eq!(t.scope_of(&A[..31]), None);
        assert_eq!(t.scope_of(&format!("{A}0")), None);
        assert_eq!(t.scope_of(""), None);
        assert!(Scope::Admin > Scope::Read);
    }

    #[test]
    fn the_authorization_header() {
        let mut t = Tokens::default();
        t.add(Scope::Admin, A, "x").unwrap();
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            granted(&t, &h)
        };
        assert_eq!(with(&[&format!("Bearer {A}")]), Ok(Scope::Admin));
        assert_eq!(with(&[&format!("bearer {A}")]), Ok(Scope::Admin));
        assert_eq!(with(&[&format!("Bearer  {A} ")]), Ok(Scope::Admin));
        assert_eq!(with(&[]), Err(Refused::NoToken));
        let twice = format!("Bearer {A}");
        assert_eq!(with(&[&twice, &twice]), Err(Refused::NoToken));
        for bad in [
            A,
            "Bearer",
            "Bearer nope-nope-nope-nope",
            &format!("Basic {A}"),
        ] {
            assert_eq!(with(&[bad]), Err(Refused::WrongToken), "{bad:?}");
        }
        for why in [Refused::NoToken, Refused::WrongToken] {
            let r = unauthorized(why);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer realm=\"warren\""),
                "{challenge}"
            );
        }
        // Without tokens, anyone reads (on loopback) and nobody acts.
        let anyone = granted(&Tokens::default(), &HeaderMap::new());
        assert_eq!(anyone.ok(), Some(Scope::Read));
    }

    #[test]
    fn exposure() {
        let mut t = Tokens::default();
        for ok in ["127.0.0.1:8080", "127.0.0.2:0", "[::1]:8080"] {
            assert!(check_exposure(ok.parse().unwrap(), &t).is_ok(), "{ok}");
        }
        for refused in [
            "0.0.0.0:8080",
            "10.1.2.3:80",
            "[::]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            let e = check_exposure(refused.parse().unwrap(), &t).unwrap_err();
            assert!(e.contains("without tokens"), "{e}");
        }
        t.add(Scope::Read, A, "x").unwrap();
        assert!(check_exposure("0.0.0.0:8080".parse().unwrap(), &t).is_ok());
    }
}

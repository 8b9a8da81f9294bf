//! What a PostgreSQL store address says: `WARREN_STORE` as a URL
//! (`postgres://user:password@db:5432/warren?sslmode=verify-full&sslrootcert=/etc/warren/ca.pem`)
//! or in libpq's `key=value` form (`host=db dbname=warren sslmode=verify-full`).
//!
//! Warren reads the TLS words itself (`sslmode`, whose `verify-ca` and
//! `verify-full` tokio-postgres does not know, and `sslrootcert`) and
//! leaves the rest to tokio-postgres's parser. The words mean what they
//! mean to libpq, but for the default: without `sslmode` Warren does not
//! try TLS (libpq's default, `prefer`, is asked for by name). Errors never
//! quote a value: one could be the password.

use crate::store::StoreError;
use std::path::PathBuf;

/// How the store's connections use TLS: libpq's `sslmode` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP. Warren's default when `sslmode` is absent.
    Disable,
    /// TLS when the server offers it, plain text when it does not; the
    /// certificate is not checked (unless `sslrootcert` names a file:
    /// then its chain is, as with `verify-ca`). Protects only against
    /// someone listening, never against someone in the middle.
    Prefer,
    /// TLS or no connection; the certificate is not checked (unless
    /// `sslrootcert` names a file: then its chain is, as libpq does).
    Require,
    /// TLS, the certificate's chain checked against `sslrootcert` (the
    /// system's roots when absent); any name.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// libpq's word for it.
    pub fn word(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The certificates a TLS connection trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The operating system's (`sslrootcert=system`, or none given with
    /// `verify-ca` or `verify-full`).
    System,
    /// The PEM certificates in a file (`sslrootcert=/path/ca.pem`).
    File(PathBuf),
}

/// The TLS part of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// As given; `None` leaves it to the mode (see [`SslMode`]).
    pub roots: Option<RootCerts>,
}

/// A parsed address: tokio-postgres's settings (its `ssl_mode` set from
/// [`TlsSettings::mode`]) and the TLS settings Warren applies.
pub(super) struct Address {
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
}

/// The keys of libpq's `key=value` form that Warren understands (those
/// tokio-postgres reads, and `sslrootcert`): a store address starting
/// with one of them (`host=db ...`) is PostgreSQL, not a file name.
const KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "options",
    "application_name",
    "sslmode",
    "sslrootcert",
    "sslnegotiation",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

fn bad(why: impl Into<String>) -> StoreError {
    StoreError::Url(why.into())
}

/// True when `s` is a `postgres://` or `postgresql://` URL.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// True when `s` starts like libpq's `key=value` form with a key Warren
/// knows (`host=db dbname=warren`, `dbname = warren`).
pub fn is_key_value(s: &str) -> bool {
    let s = s.trim_start();
    let key_end = s
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(s.len());
    KEYS.contains(&&s[..key_end]) && s[key_end..].trim_start().starts_with('=')
}

/// Parses a PostgreSQL address in either form.
pub(super) fn parse(addr: &str) -> Result<Address, StoreError> {
    let (rest, ours) = if is_url(addr) {
        split_url(addr)?
    } else {
        split_key_values(addr)?
    };
    let tls = settings(&ours)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| {
        // "invalid connection string" says little; its source says which
        // option (never its value).
        match std::error::Error::source(&e) {
            Some(why) => bad(format!("{e}: {why}")),
            None => bad(e.to_string()),
        }
    })?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    Ok(Address { config, tls })
}

/// The `sslmode` and `sslrootcert` given (the last of each wins, as in
/// libpq).
#[derive(Default)]
struct Ours {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

impl Ours {
    /// Takes `key = value` when it is one of Warren's; false otherwise.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value),
            _ => return false,
        }
        true
    }
}

fn settings(ours: &Ours) -> Result<TlsSettings, StoreError> {
    let roots = match ours.sslrootcert.as_deref() {
        None | Some("") => None,
        Some("system") => Some(RootCerts::System),
        Some(path) => Some(RootCerts::File(PathBuf::from(path))),
    };
    let mode = match ours.sslmode.as_deref() {
        // Giving a CA means wanting it checked: as libpq does for
        // `sslrootcert=system`, the default becomes verify-full.
        None if roots.is_some() => SslMode::VerifyFull,
        None => SslMode::Disable,
        Some("disable") => SslMode::Disable,
        Some("prefer") => SslMode::Prefer,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some("allow") => {
            return Err(bad(
                "sslmode=allow is not supported (it tries plain text first): use disable, prefer, require, verify-ca or verify-full",
            ));
        }
        Some(_) => {
            return Err(bad(
                "sslmode must be one of disable, prefer, require, verify-ca, verify-full",
            ));
        }
    };
    if roots == Some(RootCerts::System) && mode != SslMode::VerifyFull {
        return Err(bad(format!(
            "sslrootcert=system needs sslmode=verify-full (not {}): the system's roots vouch for names, not for a chain alone",
            mode.word()
        )));
    }
    Ok(TlsSettings { mode, roots })
}

/// A URL without Warren's query parameters, and those parameters. The
/// query is found as tokio-postgres finds it: after the user-info (up to
/// the first `@`), at the first `?`.
fn split_url(url: &str) -> Result<(String, Ours), StoreError> {
    let after_userinfo = url.find('@').map_or(0, |at| at + 1);
    let Some(q) = url[after_userinfo..].find('?').map(|q| after_userinfo + q) else {
        unread(url, &Ours::default())?;
        return Ok((url.to_owned(), Ours::default()));
    };
    let mut ours = Ours::default();
    let mut kept = Vec::new();
    for part in url[q + 1..].split('&') {
        let taken = match part.split_once('=') {
            Some((key, value)) => ours.take(&percent_decode(key)?, percent_decode(value)?),
            None => false,
        };
        if !taken {
            kept.push(part);
        }
    }
    let mut rest = url[..q].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    unread(&rest, &ours)?;
    Ok((rest, ours))
}

/// Refuses a URL that says `sslmode=` or `sslrootcert=` where it is not
/// read as a parameter (an `@` in the query makes everything before it
/// the user-info), rather than connect without the TLS it asks for.
fn unread(rest: &str, ours: &Ours) -> Result<(), StoreError> {
    for (key, given) in [
        ("sslmode=", ours.sslmode.is_some()),
        ("sslrootcert=", ours.sslrootcert.is_some()),
    ] {
        if !given && rest.contains(key) {
            return Err(bad(format!(
                "`{key}` is not where a parameter is read: write any `@` after the host as %40"
            )));
        }
    }
    Ok(())
}

/// `%XX` escapes decoded.
fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "a `%` at byte {i} of a parameter is not followed by two hex digits"
                    ))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("a URL parameter is not UTF-8 once decoded"))
}

/// The `key=value` form without Warren's keys (written back quoted), and
/// those keys' values. Read as tokio-postgres reads it: white space
/// around `=` allowed, values quoted with `'` or not, `\` escaping the
/// next character.
fn split_key_values(s: &str) -> Result<(String, Ours), StoreError> {
    let mut ours = Ours::default();
    let mut rest = String::new();
    for (key, value) in key_values(s)? {
        if ours.take(key, value.clone()) {
            continue;
        }
        let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
        if !rest.is_empty() {
            rest.push(' ');
        }
        rest.push_str(&format!("{key}='{quoted}'"));
    }
    Ok((rest, ours))
}

/// The pairs of libpq's `key=value` form.
fn key_values(s: &str) -> Result<Vec<(&str, String)>, StoreError> {
    let mut pairs = Vec::new();
    let mut it = s.char_indices().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut it);
        let Some(&(start, _)) = it.peek() else {
            return Ok(pairs);
        };
        while it
            .next_if(|&(_, c)| !c.is_whitespace() && c != '=')
            .is_some()
        {}
        let end = it.peek().map_or(s.len(), |&(i, _)| i);
        let key = &s[start..end];
        skip_ws(&mut it);
        if key.is_empty() || it.next_if(|&(_, c)| c == '=').is_none() {
            return Err(bad(format!(
                "at byte {start}: expected `key=value` (the key=value form)"
            )));
        }
        skip_ws(&mut it);
        let quoted = it.next_if(|&(_, c)| c == '\'').is_some();
        let mut value = String::new();
        let mut closed = false;
        while let Some((_, c)) = it.next() {
            match c {
                '\\' => value.extend(it.next().map(|(_, c)| c)),
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                c if !quoted && c.is_whitespace() => break,
                c => value.push(c),
            }
        }
        if quoted && !closed {
            return Err(bad(format!(
                "the value of `{key}` has no closing quote (the key=value form)"
            )));
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::{RootCerts, SslMode, TlsSettings, is_key_value, parse};
    use std::path::PathBuf;
    use tokio_postgres::config::{Host, SslMode as PgSslMode};

    fn tls(addr: &str) -> TlsSettings {
        parse(addr)
            .map(|a| a.tls)
            .unwrap_or_else(|e| panic!("{addr}: {e}"))
    }

    fn error(addr: &str) -> String {
        match parse(addr) {
            Ok(_) => panic!("{addr} should not parse"),
            Err(e) => e.to_string(),
        }
    }

    fn file(p: &str) -> RootCerts {
        RootCerts::File(PathBuf::from(p))
    }

    #[test]
    fn the_sslmode_words() {
        for (addr, mode, roots) in [
            ("postgres://u@db/w", SslMode::Disable, None),
            ("postgres://u@db/w?sslmode=disable", SslMode::Disable, None),
            ("postgres://u@db/w?sslmode=prefer", SslMode::Prefer, None),
            ("postgres://u@db/w?sslmode=require", SslMode::Require, None),
            (
                "postgres://u@db/w?sslmode=verify-ca",
                SslMode::VerifyCa,
                None,
            ),
            (
                "postgresql://u@db/w?sslmode=verify-full&sslrootcert=/x/ca.pem",
                SslMode::VerifyFull,
                Some(file("/x/ca.pem")),
            ),
            (
                "postgres://u@db/w?sslrootcert=%2Fa%20b%2Fca.pem",
                SslMode::VerifyFull,
                Some(file("/a b/ca.pem")),
            ),
            (
                "postgres://u@db/w?sslrootcert=system",
                SslMode::VerifyFull,
                Some(RootCerts::System),
            ),
            (
                "postgres://u@db/w?sslmode=require&sslrootcert=",
                SslMode::Require,
                None,
            ),
            (
                "postgres://u@db/w?sslmode=disable&sslmode=verify-full",
                SslMode::VerifyFull,
                None,
            ),
        ] {
            assert_eq!(tls(addr), TlsSettings { mode, roots }, "{addr}");
        }
    }

    #[test]
    fn tokio_postgres_reads_the_rest() {
        let a = parse(
            "postgres://u:p%40ss@db:6543/w?application_name=x&sslmode=verify-full&connect_timeout=3&sslrootcert=/ca.pem",
        )
        .unwrap();
        let c = &a.config;
        assert_eq!(c.get_user(), Some("u"));
        assert_eq!(c.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(c.get_hosts(), &[Host::Tcp("db".into())]);
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_dbname(), Some("w"));
        assert_eq!(c.get_application_name(), Some("x"));
        assert_eq!(c.get_ssl_mode(), PgSslMode::Require);
        assert_eq!(a.tls.roots, Some(file("/ca.pem")));
        assert_eq!(
            parse("postgres://db/w").unwrap().config.get_ssl_mode(),
            PgSslMode::Disable
        );
        assert_eq!(
            parse("postgres://db/w?sslmode=prefer")
                .unwrap()
                .config
                .get_ssl_mode(),
            PgSslMode::Prefer
        );
    }

    #[test]
    fn the_key_value_form() {
        let a = parse(
            r"host=db port = 6543 dbname=w user=u password='it\'s a secret' sslmode=verify-ca sslrootcert='/a b/ca.pem'",
        )
        .unwrap();
        assert_eq!(a.config.get_hosts(), &[Host::Tcp("db".into())]);
        assert_eq!(a.config.get_ports(), &[6543]);
        assert_eq!(a.config.get_password(), Some(&b"it's a secret"[..]));
        assert_eq!(
            a.tls,
            TlsSettings {
                mode: SslMode::VerifyCa,
                roots: Some(file("/a b/ca.pem"))
            }
        );
        assert_eq!(a.config.get_ssl_mode(), PgSslMode::Require);
        assert_eq!(tls("host=db").mode, SslMode::Disable);
        assert_eq!(
            parse(r"host=db password=a\ b")
                .unwrap()
                .config
                .get_password(),
            Some(&b"a b"[..])
        );
    }

    #[test]
    fn which_strings_are_the_key_value_form() {
        for (s, expected) in [
            ("host=db dbname=w", true),
            ("  dbname = w", true),
            ("sslmode=require host=db", true),
            ("warren.db", false),
            ("/var/lib/warren.db", false),
            ("hostname=x", false),
            ("host", false),
            ("", false),
        ] {
            assert_eq!(is_key_value(s), expected, "{s}");
        }
    }

    #[test]
    fn refusals_are_clear_and_quote_no_value() {
        for (addr, says) in [
            (
                "postgres://db/w?sslmode=allow",
                "sslmode=allow is not supported",
            ),
            ("postgres://db/w?sslmode=secret", "sslmode must be one of"),
            (
                "postgres://db/w?sslmode=require&sslrootcert=system",
                "sslrootcert=system needs sslmode=verify-full",
            ),
            ("host=db password='secret", "no closing quote"),
            ("host=db secret", "expected `key=value`"),
            ("postgres://db/w?sslrootcert=%zzsecret", "two hex digits"),
            ("postgres://db/w?bogus=secret", "unknown option"),
            (
                "postgres://db/w?sslmode=verify-full&application_name=secret@x",
                "`sslmode=` is not where a parameter is read",
            ),
        ] {
            let e = error(addr);
            assert!(e.contains(says), "{addr}: {e}");
            assert!(!e.contains("secret"), "{addr} quoted a value: {e}");
        }
    }
}

//! Keeping passwords out of logs, errors and `Debug` output:
//! [`redact_addr`] hides every password that a broker address
//! (`AMQP_ADDR`) or a store address (`WARREN_STORE`) can carry.
//!
//! Parsers disagree on where a URL's password ends when it holds an
//! unescaped `/`, `@`, `:` or `?` (libpq and tokio-postgres stop at the
//! first `@`, the `url` crate at the last `@` before the first `/`), so
//! redaction takes the widest reading: when in doubt, more is hidden,
//! never less.

/// What stands in for a hidden password.
const HIDDEN: &str = "***";

/// `addr` with every password in it replaced by `***`:
///
/// - a URL's user-info (`scheme://user:password@host`): everything from
///   the first `:` after the scheme to the last `@` is hidden, so a
///   password holding an unescaped `/`, `@`, `:` or `?` is hidden whole
///   (an `@` further on, in a path or a parameter, hides more than the
///   password: the price of never showing part of one);
/// - a URL's query parameters whose name holds `password` (`password`,
///   `sslpassword`, percent-encoded names too), up to the next `&` that
///   starts another `name=value`;
/// - in libpq's `key=value` form (`host=db password=secret`, also
///   `password = 'with spaces'` and `\'` escapes), the value of each key
///   whose name holds `password`; an unterminated quote hides the rest.
///
/// Anything without a password comes back unchanged.
pub fn redact_addr(addr: &str) -> String {
    match scheme_end(addr) {
        Some(start) => redact_query(&redact_userinfo(addr, start)),
        None => redact_key_values(addr),
    }
}

/// Where what follows `scheme://` starts, when `s` starts with a URL
/// scheme (a letter, then letters, digits, `+`, `-` or `.`).
fn scheme_end(s: &str) -> Option<usize> {
    let colon = s.find("://")?;
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (starts_with_letter && rest_ok).then_some(colon + 3)
}

/// The user-info's password hidden: from the first `:` after the scheme
/// to the last `@`.
fn redact_userinfo(addr: &str, start: usize) -> String {
    let rest = &addr[start..];
    let Some(at) = rest.rfind('@') else {
        return addr.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{HIDDEN}{}", &addr[..start + colon + 1], &rest[at..]),
        None => addr.to_owned(),
    }
}

/// `?name=value` and `&name=value` parameters hidden when `name` holds
/// `password`.
fn redact_query(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(found) = url[i..].find(['?', '&']) {
        let key_start = i + found + 1;
        let segment_end = url[key_start..]
            .find(['&', '?'])
            .map_or(url.len(), |e| key_start + e);
        i = key_start;
        let Some(eq) = url[key_start..segment_end].find('=') else {
            continue;
        };
        let key = percent_decode_lossy(&url[key_start..key_start + eq]);
        if !key.to_ascii_lowercase().contains("password") {
            continue;
        }
        let value_start = key_start + eq + 1;
        let value_end = value_end(url, value_start);
        out.push_str(&url[copied..value_start]);
        out.push_str(HIDDEN);
        copied = value_end;
        i = value_end;
    }
    out.push_str(&url[copied..]);
    out
}

/// Where a query value that starts at `start` ends: at the first `&`
/// followed by another `name=` (so a value holding an unescaped `&` is
/// hidden whole), else at the end.
fn value_end(url: &str, start: usize) -> usize {
    let mut i = start;
    while let Some(amp) = url[i..].find('&') {
        let next = i + amp + 1;
        let segment = &url[next..];
        let segment = &segment[..segment.find('&').unwrap_or(segment.len())];
        if segment.contains('=') {
            return next - 1;
        }
        i = next;
    }
    url.len()
}

/// `%XX` escapes decoded, anything else (and invalid UTF-8) kept as is.
fn percent_decode_lossy(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq's `key = value` pairs: the value of every key whose name holds
/// `password` hidden, quoted or not.
fn redact_key_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    let at = |i: usize| s[i..].chars().next();
    let skip_space = |mut i: usize| {
        while at(i).is_some_and(char::is_whitespace) {
            i += at(i).map_or(0, char::len_utf8);
        }
        i
    };
    loop {
        i = skip_space(i);
        let key_start = i;
        while at(i).is_some_and(|c| !c.is_whitespace() && c != '=') {
            i += at(i).map_or(0, char::len_utf8);
        }
        if i == key_start && at(i).is_none() {
            break;
        }
        let key = &s[key_start..i];
        i = skip_space(i);
        if at(i) != Some('=') {
            // Not `key=`: a stray word; go on after it.
            if i == key_start {
                i += at(i).map_or(0, char::len_utf8);
            }
            continue;
        }
        i = skip_space(i + 1);
        let value_start = i;
        i = key_value_end(s, i);
        if key.to_ascii_lowercase().contains("password") {
            out.push_str(&s[copied..value_start]);
            out.push_str(HIDDEN);
            copied = i;
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// Where a libpq value starting at `start` ends: after its closing quote
/// (`'...'`, `\` escaping the next character; the end when unterminated),
/// or at the next unescaped white space.
fn key_value_end(s: &str, start: usize) -> usize {
    let mut chars = s[start..].char_indices();
    let quoted = s[start..].starts_with('\'');
    if quoted {
        chars.next();
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return start + i + 1,
            c if !quoted && c.is_whitespace() => return start + i,
            _ => {}
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::redact_addr;

    fn check(cases: &[(&str, &str)]) {
        for (input, expected) in cases {
            assert_eq!(redact_addr(input), *expected, "{input}");
        }
    }

    #[test]
    fn a_urls_password_is_hidden() {
        check(&[
            (
                "amqp://guest:secret@host:5672/%2f",
                "amqp://guest:***@host:5672/%2f",
            ),
            (
                "postgres://warren:secret@db:5432/warren",
                "postgres://warren:***@db:5432/warren",
            ),
            ("amqp://a:b@c", "amqp://a:***@c"),
            ("postgres://:secret@db/x", "postgres://:***@db/x"),
            ("postgres://u:@db/x", "postgres://u:***@db/x"),
        ]);
    }

    #[test]
    fn a_password_with_an_unescaped_slash_is_hidden_whole() {
        check(&[
            ("amqp://u:pa/ss@h/vhost", "amqp://u:***@h/vhost"),
            ("postgres://u:/a/b/@db/x", "postgres://u:***@db/x"),
        ]);
    }

    #[test]
    fn a_password_with_an_unescaped_at_is_hidden_whole() {
        check(&[
            ("postgres://u:p@ss@db/x", "postgres://u:***@db/x"),
            ("amqp://u:@@@h/v", "amqp://u:***@h/v"),
        ]);
    }

    #[test]
    fn a_password_with_an_unescaped_colon_is_hidden_whole() {
        check(&[("amqp://u:pa:ss:@h:5672/v", "amqp://u:***@h:5672/v")]);
    }

    #[test]
    fn a_password_with_an_unescaped_question_mark_is_hidden_whole() {
        check(&[
            ("amqp://u:pa?ss@h/v", "amqp://u:***@h/v"),
            (
                "postgres://u:a?password=b@db/x?sslmode=require",
                "postgres://u:***@db/x?sslmode=require",
            ),
        ]);
    }

    #[test]
    fn a_percent_encoded_password_is_hidden() {
        check(&[
            ("amqps://u:p%40ss@h/vh", "amqps://u:***@h/vh"),
            ("postgres://u:%2F%3A%3F%40@db/x", "postgres://u:***@db/x"),
        ]);
    }

    #[test]
    fn a_password_parameter_is_hidden() {
        check(&[
            (
                "postgres://u@db/x?password=secret",
                "postgres://u@db/x?password=***",
            ),
            (
                "postgres://db/x?sslmode=require&password=secret&application_name=a",
                "postgres://db/x?sslmode=require&password=***&application_name=a",
            ),
            (
                "postgres://db/x?sslpassword=secret&sslmode=verify-full",
                "postgres://db/x?sslpassword=***&sslmode=verify-full",
            ),
            // A name written with escapes, read as the parser decodes it.
            (
                "postgres://db/x?pass%77ord=secret",
                "postgres://db/x?pass%77ord=***",
            ),
            // An unescaped `&` inside the value: hidden up to the next
            // `name=`.
            (
                "postgres://db/x?password=se&cr&et&sslmode=require",
                "postgres://db/x?password=***&sslmode=require",
            ),
            (
                "amqp://h/v?PASSWORD=x&password=y",
                "amqp://h/v?PASSWORD=***&password=***",
            ),
        ]);
    }

    #[test]
    fn both_places_at_once() {
        check(&[(
            "postgres://u:one@db/x?password=two",
            "postgres://u:***@db/x?password=***",
        )]);
    }

    #[test]
    fn a_key_value_password_is_hidden() {
        check(&[
            (
                "host=db password=secret dbname=warren",
                "host=db password=*** dbname=warren",
            ),
            ("password=secret", "password=***"),
            (
                "host=db password='with spaces' user=w",
                "host=db password=*** user=w",
            ),
            (
                r"host=db password='it\'s \\ here' user=w",
                "host=db password=*** user=w",
            ),
            (
                "host=db password = secret user=w",
                "host=db password = *** user=w",
            ),
            (r"password=a\ b user=w", "password=*** user=w"),
            ("host=db sslpassword=secret", "host=db sslpassword=***"),
            // Unterminated quote: the rest is hidden.
            ("password='open user=w", "password=***"),
            // A value that looks like a URL is still a key=value value.
            ("host=db password=a://b@c", "host=db password=***"),
            ("password=", "password=***"),
        ]);
    }

    #[test]
    fn an_address_without_a_password_is_unchanged() {
        check(&[
            ("amqp://user@host/", "amqp://user@host/"),
            ("amqp://127.0.0.1:5672/%2f", "amqp://127.0.0.1:5672/%2f"),
            (
                "postgres://u@db:5432/x?sslmode=verify-full&sslrootcert=/etc/ca.pem",
                "postgres://u@db:5432/x?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            ),
            ("host=db user=w dbname=x", "host=db user=w dbname=x"),
            ("warren.db", "warren.db"),
            ("/var/lib/warren/warren.db", "/var/lib/warren/warren.db"),
            ("not a url", "not a url"),
            ("", ""),
            ("amqp://", "amqp://"),
            ("a=b ==c 'x", "a=b ==c 'x"),
        ]);
    }

    #[test]
    fn an_at_after_the_host_hides_more_rather_than_less() {
        // Read as tokio-postgres would, `db:5432/x?application_name=a` is
        // the user-info: hidden from the first `:`.
        check(&[(
            "postgres://db:5432/x?application_name=a@b",
            "postgres://db:***@b",
        )]);
    }
}

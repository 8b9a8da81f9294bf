//! Several brokers in one `AMQP_ADDR`: the nodes of a RabbitMQ cluster,
//! given as full addresses separated by commas
//! (`amqp://u:p@node1:5672/%2f,amqp://u:p@node2:5672/%2f`), and the order
//! in which a connection tries them.
//!
//! Every connection Warren opens goes through [`crate::amqp::connect`],
//! which asks [`attempts`] for the order: all the addresses, starting one
//! further along the list at each connection (from a point that depends
//! on the process), so that a node that is down costs one refused attempt
//! rather than every process's every reconnect, and the connections of a
//! deployment spread over the nodes.

use crate::redact::redact_addr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The addresses of `list`: cut before every `amqp://` or `amqps://`
/// that follows a comma (blanks around the commas allowed; a trailing
/// comma ends the list), each trimmed, empty ones dropped. A comma anywhere else (in a password, in a query)
/// stays part of its address. A list with nothing in it gives itself, so
/// that the connection's error names what was given.
pub fn split(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (comma, _) in list.match_indices(',') {
        let rest = list[comma + 1..].trim_start();
        if rest.is_empty() || starts_with_scheme(rest) {
            out.push(list[start..comma].trim());
            start = comma + 1;
        }
    }
    out.push(list[start..].trim());
    out.retain(|a| !a.is_empty());
    if out.is_empty() {
        out.push(list);
    }
    out
}

fn starts_with_scheme(s: &str) -> bool {
    ["amqp://", "amqps://"].iter().any(|scheme| {
        s.get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
    })
}

/// Indices `0..len` starting at `start % len` and wrapping around.
pub fn order(len: usize, start: usize) -> impl Iterator<Item = usize> {
    (0..len).map(move |k| (start + k) % len.max(1))
}

/// Connections opened so far by this process, to rotate the first
/// address tried.
static OPENED: AtomicUsize = AtomicUsize::new(0);

/// The addresses of `list` in the order the next connection tries them:
/// every one once, from a starting point that moves on by one with each
/// connection and differs between processes (it counts from the process
/// id).
pub fn attempts(list: &str) -> Vec<&str> {
    let addrs = split(list);
    let start = OPENED
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id() as usize);
    order(addrs.len(), start).map(|i| addrs[i]).collect()
}

/// `list` with every password hidden ([`redact_addr`] on each address),
/// joined with `, `. Should an address look cut inside its user-info (a
/// password holding an unescaped `,amqp://`), the whole list is redacted
/// as one address instead: more is hidden, never less.
pub fn redact(list: &str) -> String {
    let addrs = split(list);
    if addrs.len() < 2 {
        return redact_addr(list);
    }
    if !addrs.iter().all(|a| looks_whole(a)) {
        return redact_addr(list);
    }
    addrs
        .iter()
        .map(|a| redact_addr(a))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An address whose authority is either `user...@host...` or a host with
/// at most a numeric port: not the front half of a password.
fn looks_whole(addr: &str) -> bool {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    if rest.contains('@') {
        return true;
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    match authority.rsplit_once(':') {
        None => true,
        Some((host, port)) => {
            !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{order, redact, split};

    fn check_split(list: &str, expected: &[&str]) {
        assert_eq!(split(list), expected, "{list}");
    }

    #[test]
    fn one_address_is_itself() {
        check_split("amqp://127.0.0.1:5672/%2f", &["amqp://127.0.0.1:5672/%2f"]);
        check_split("", &[""]);
        check_split(" , ", &[" , "]);
    }

    #[test]
    fn a_list_is_cut_before_each_scheme() {
        check_split(
            "amqp://a:5701/%2f,amqp://b:5702/%2f,amqps://u:p@c:5671/v",
            &[
                "amqp://a:5701/%2f",
                "amqp://b:5702/%2f",
                "amqps://u:p@c:5671/v",
            ],
        );
        check_split(" amqp://a , AMQP://b ,", &["amqp://a", "AMQP://b"]);
    }

    #[test]
    fn other_commas_stay_in_their_address() {
        check_split(
            "amqp://u:p,q@a/%2f?x=1,2,amqp://b",
            &["amqp://u:p,q@a/%2f?x=1,2", "amqp://b"],
        );
    }

    #[test]
    fn the_order_wraps_from_its_start() {
        assert_eq!(order(3, 0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(order(3, 4).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(order(1, 7).collect::<Vec<_>>(), [0]);
        assert_eq!(order(0, 7).count(), 0);
    }

    #[test]
    fn successive_connections_start_one_further() {
        // Nothing else in this crate's tests connects, so these are three
        // connections in a row.
        let list = "amqp://a,amqp://b,amqp://c";
        let tries: Vec<Vec<&str>> = (0..3).map(|_| super::attempts(list)).collect();
        let mut firsts: Vec<&str> = tries.iter().map(|t| t[0]).collect();
        firsts.sort_unstable();
        assert_eq!(firsts, ["amqp://a", "amqp://b", "amqp://c"]);
        for t in &tries {
            let at = ["amqp://a", "amqp://b", "amqp://c"]
                .iter()
                .position(|a| *a == t[0])
                .unwrap();
            let expected: Vec<&str> = order(3, at)
                .map(|i| ["amqp://a", "amqp://b", "amqp://c"][i])
                .collect();
            assert_eq!(*t, expected);
        }
    }

    #[test]
    fn every_password_of_a_list_is_hidden() {
        assert_eq!(
            redact("amqp://u:s1@a:5701/%2f,amqps://v:s2@b/x"),
            "amqp://u:***@a:5701/%2f, amqps://v:***@b/x"
        );
        assert_eq!(redact("amqp://a:5701,amqp://b"), "amqp://a:5701, amqp://b");
        assert_eq!(redact("amqp://u:secret@a"), "amqp://u:***@a");
    }

    #[test]
    fn a_password_cut_by_the_list_is_hidden_whole() {
        let shown = redact("amqp://u:se,amqp://cret@a/%2f");
        assert!(!shown.contains("se") || !shown.contains("cret"), "{shown}");
        assert_eq!(shown, "amqp://u:***@a/%2f");
    }
}

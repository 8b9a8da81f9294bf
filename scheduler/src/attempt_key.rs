//! Attempt tokens: what binds a result to the task message it answers.
//!
//! Each task message carries `token`, an HMAC-SHA256 of the attempt's ids
//! (workflow, task, attempt) under a key the store keeps (created once,
//! shared by every scheduler of a PostgreSQL store, so a result is
//! verified by whichever scheduler owns its workflow now). A result is
//! applied only if it carries the token back: whoever did not receive the
//! task message (another pool's worker, a producer, a stranger with a
//! foothold on the vhost) cannot forge the result of a running attempt.
//! Nothing is stored per attempt: the token is derived again to verify it,
//! in constant time.

use ring::{
    hmac,
    rand::{SecureRandom, SystemRandom},
};

/// Bytes of a key.
const KEY_BYTES: usize = 32;

/// The store's key of attempt tokens. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct AttemptKey(hmac::Key);

impl std::fmt::Debug for AttemptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptKey(***)")
    }
}

impl AttemptKey {
    /// A new random key, hex-encoded as the store keeps it; `None` if the
    /// system has no randomness to give (the store then refuses to open).
    pub fn generate_hex() -> Option<String> {
        let mut bytes = [0u8; KEY_BYTES];
        SystemRandom::new().fill(&mut bytes).ok()?;
        Some(hex(&bytes))
    }

    /// The key the store keeps as hex; `None` when it is not hex of
    /// 32 bytes.
    pub fn from_hex(stored: &str) -> Option<AttemptKey> {
        let bytes = unhex(stored)?;
        (bytes.len() == KEY_BYTES).then(|| AttemptKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// A new random key that no store keeps: for tests and tools.
    pub fn random() -> AttemptKey {
        let stored = Self::generate_hex().expect("the system gives random bytes");
        Self::from_hex(&stored).expect("a generated key is valid")
    }

    /// A key for tests and tools: fixed bytes.
    pub fn fixed(seed: u8) -> AttemptKey {
        AttemptKey(hmac::Key::new(hmac::HMAC_SHA256, &[seed; KEY_BYTES]))
    }

    /// The token of one attempt: 64 hex characters.
    pub fn token(&self, a: Attempt<'_>) -> String {
        hex(hmac::sign(&self.0, &message(a)).as_ref())
    }

    /// True when `token` is the attempt's (compared in constant time).
    pub fn verify(&self, a: Attempt<'_>, token: &str) -> bool {
        unhex(token).is_some_and(|tag| hmac::verify(&self.0, &message(a), &tag).is_ok())
    }
}

/// One attempt, as its token names it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub workflow: &'a str,
    pub task: &'a str,
    pub attempt: u32,
    /// The workflow's run: 1 until a `rerun`, whose attempts count from 1
    /// again.
    pub run: u32,
}

/// The signed bytes: the ids with their lengths, so that no two attempts
/// share them (`a/b` + `c` is not `a` + `b/c`), then the run after the
/// first (a first run's tokens are those of a scheduler without re-runs).
fn message(a: Attempt<'_>) -> Vec<u8> {
    let Attempt {
        workflow,
        task,
        attempt,
        run,
    } = a;
    let mut m = Vec::with_capacity(workflow.len() + task.len() + 24);
    for part in [workflow.as_bytes(), task.as_bytes()] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(&attempt.to_be_bytes());
    if run > 1 {
        m.extend_from_slice(&run.to_be_bytes());
    }
    m
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Lower- or upper-case hex of at most 128 characters (longer is no
/// token of ours, and is not decoded).
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<'a>(workflow: &'a str, task: &'a str, attempt: u32, run: u32) -> Attempt<'a> {
        Attempt {
            workflow,
            task,
            attempt,
            run,
        }
    }

    #[test]
    fn a_token_verifies_for_its_attempt_only() {
        let key = AttemptKey::fixed(7);
        let t = key.token(at("wf", "task", 1, 1));
        assert_eq!(t.len(), 64);
        assert!(key.verify(at("wf", "task", 1, 1), &t));
        assert!(key.verify(at("wf", "task", 1, 1), &t.to_uppercase()));
        assert!(!key.verify(at("wf", "task", 2, 1), &t), "another attempt");
        assert!(!key.verify(at("wf", "other", 1, 1), &t), "another task");
        assert!(!key.verify(at("w", "ftask", 1, 1), &t), "ids are delimited");
        assert!(!key.verify(at("wf", "task", 1, 2), &t), "another run");
        let second = key.token(at("wf", "task", 1, 2));
        assert!(key.verify(at("wf", "task", 1, 2), &second));
        assert!(
            !key.verify(at("wf", "task", 1, 1), &second),
            "the first run's"
        );
        assert!(
            !AttemptKey::fixed(8).verify(at("wf", "task", 1, 1), &t),
            "another key"
        );
        for bad in [
            "",
            "zz",
            &t[..63],
            &t[..62],
            &"0".repeat(64),
            &"a".repeat(10_000),
        ] {
            assert!(!key.verify(at("wf", "task", 1, 1), bad), "{bad:.20}");
        }
    }

    #[test]
    fn keys_round_trip_through_the_stores_hex_and_are_not_shown() {
        let stored = AttemptKey::generate_hex().unwrap();
        assert_eq!(stored.len(), 64);
        assert_ne!(stored, AttemptKey::generate_hex().unwrap());
        let key = AttemptKey::from_hex(&stored).unwrap();
        let again = AttemptKey::from_hex(&stored).unwrap();
        assert_eq!(
            key.token(at("a", "b", 3, 1)),
            again.token(at("a", "b", 3, 1))
        );
        assert!(AttemptKey::from_hex("abc").is_none());
        assert!(AttemptKey::from_hex(&"ab".repeat(16)).is_none(), "16 bytes");
        assert_eq!(format!("{key:?}"), "AttemptKey(***)");
    }
}

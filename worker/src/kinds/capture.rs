//! Reading a stream while keeping at most a given number of its bytes.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The first `cap` bytes of a stream, and how many it had in all.
#[derive(Debug)]
pub(crate) struct Capture {
    kept: Vec<u8>,
    cap: usize,
    seen: u64,
}

impl Capture {
    pub(crate) fn new(cap: usize) -> Capture {
        Capture {
            kept: Vec::new(),
            cap,
            seen: 0,
        }
    }

    /// Adds the part of `chunk` that fits; counts all of it.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let room = self.cap - self.kept.len();
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.seen += chunk.len() as u64;
    }

    /// Whether bytes were dropped.
    pub(crate) fn truncated(&self) -> bool {
        self.seen > self.kept.len() as u64
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.kept
    }

    /// What was kept, as text (invalid UTF-8 replaced).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }

    /// Reads `reader` to its end, keeping what fits and dropping the rest,
    /// so a writer never blocks on a full pipe and memory stays bounded.
    pub(crate) async fn drain(&mut self, mut reader: impl AsyncRead + Unpin) {
        let mut chunk = vec![0u8; 16 * 1024];
        // A read error ends the stream like its end: what was read is kept.
        while let Ok(n @ 1..) = reader.read(&mut chunk).await {
            self.push(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_first_bytes_up_to_the_cap_and_counts_the_rest() {
        let mut c = Capture::new(5);
        c.push(b"abc");
        assert!(!c.truncated());
        c.push(b"defg");
        assert_eq!((c.bytes(), c.truncated()), (&b"abcde"[..], true));

        let mut c = Capture::new(4);
        c.drain(&b"abcd"[..]).await;
        assert_eq!((c.text().as_str(), c.truncated()), ("abcd", false));

        let big = vec![b'x'; 100_000];
        let mut c = Capture::new(70_000);
        c.drain(&big[..]).await;
        assert_eq!((c.bytes().len(), c.seen), (70_000, 100_000));
    }
}

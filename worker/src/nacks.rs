//! A message the broker nacks, published again before anything is
//! requeued.
//!
//! A quorum queue nacks what it is sent while it elects a new leader (its
//! leader's node of a RabbitMQ cluster lost), which takes seconds.
//! Answering such a nack at once by requeueing the task runs it again and
//! again within milliseconds, each run a delivery towards the quorum
//! queue's delivery limit (20), until the task is dead-lettered and its
//! workflow stuck: the chaos program's cluster runs found it. So every
//! publish a delivery waits for (a result, alone or in a batch; a suspect
//! moved aside; a dead letter; a delivery given back) goes through
//! [`through_nacks`]: sent again after each nack, with backoff, for up to
//! [`NACK_RETRY_FOR`], while its channel is open. A message the broker
//! nacked was not taken, or, rarely, taken without its confirm: sending
//! it again may duplicate it, which every consumer of Warren's messages
//! tolerates (at least once).

use std::{
    future::Future,
    time::{Duration, Instant},
};
use warren_shared::{Error, backoff::Backoff};

/// How long a nacked message is sent again (100 ms doubling up to 10 s,
/// jittered: [`Backoff::reconnect`]) before the nack stands.
pub(crate) const NACK_RETRY_FOR: Duration = Duration::from_secs(30);

/// `send()`, again after each nack until [`NACK_RETRY_FOR`] has passed or
/// `open()` says the channel is gone; the last outcome.
pub(crate) async fn through_nacks<Fut>(
    open: impl Fn() -> bool,
    send: impl FnMut() -> Fut,
) -> Result<(), Error>
where
    Fut: Future<Output = Result<(), Error>>,
{
    through_nacks_for(NACK_RETRY_FOR, open, send).await
}

async fn through_nacks_for<Fut>(
    limit: Duration,
    open: impl Fn() -> bool,
    mut send: impl FnMut() -> Fut,
) -> Result<(), Error>
where
    Fut: Future<Output = Result<(), Error>>,
{
    let started = Instant::now();
    let mut backoff = Backoff::reconnect();
    loop {
        let outcome = send().await;
        let Err(Error::PublishNacked {
            exchange,
            routing_key,
        }) = &outcome
        else {
            return outcome;
        };
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() || !open() {
            return outcome;
        }
        let delay = backoff.next_delay();
        if backoff.failures() == 1 {
            tracing::warn!(%exchange, key = %routing_key, "The broker nacked a message; publishing it again");
        }
        tokio::time::sleep(delay.min(left)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, Error, through_nacks_for};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn nacked() -> Error {
        Error::PublishNacked {
            exchange: "x".into(),
            routing_key: "k".into(),
        }
    }

    /// Runs `through_nacks_for(limit)` on a send that answers `answers`
    /// in turn (then Ok); what it returned, and how many sends it made.
    async fn check(
        limit: Duration,
        open: bool,
        answers: Vec<fn() -> Result<(), Error>>,
    ) -> (Result<(), Error>, usize) {
        let sent = AtomicUsize::new(0);
        let outcome = through_nacks_for(
            limit,
            || open,
            || {
                let i = sent.fetch_add(1, Ordering::SeqCst);
                let answer = answers.get(i).map_or(Ok(()), |a| a());
                async move { answer }
            },
        )
        .await;
        (outcome, sent.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_nack_is_sent_again_until_confirmed() {
        let (outcome, sent) = check(
            Duration::from_secs(30),
            true,
            vec![|| Err(nacked()), || Err(nacked())],
        )
        .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(sent, 3);
    }

    #[tokio::test]
    async fn the_nack_stands_past_the_limit_or_once_the_channel_is_gone() {
        let (outcome, sent) = check(Duration::ZERO, true, vec![|| Err(nacked())]).await;
        assert!(
            matches!(outcome, Err(Error::PublishNacked { .. })),
            "{outcome:?}"
        );
        assert_eq!(sent, 1);
        let (outcome, sent) = check(Duration::from_secs(30), false, vec![|| Err(nacked())]).await;
        assert!(
            matches!(outcome, Err(Error::PublishNacked { .. })),
            "{outcome:?}"
        );
        assert_eq!(sent, 1);
    }

    #[tokio::test]
    async fn other_refusals_are_not_sent_again() {
        let unroutable = || {
            Err(Error::Unroutable {
                exchange: "x".into(),
                routing_key: "k".into(),
            })
        };
        let (outcome, sent) = check(Duration::from_secs(30), true, vec![unroutable]).await;
        assert!(
            matches!(outcome, Err(Error::Unroutable { .. })),
            "{outcome:?}"
        );
        assert_eq!(sent, 1);
    }
}

//! The timeouts of Warren's PostgreSQL sessions ([`PgTimeouts`]): how soon
//! each side of a connection gives up on a silent peer, and how long a
//! session may sit in a transaction or wait for a lock.
//!
//! Every connection (the pool's and the one holding the partition locks)
//! gets TCP keepalives and `tcp_user_timeout` on the client side, and the
//! same keepalives, `idle_in_transaction_session_timeout` and
//! `lock_timeout` on the server side (startup options, so no extra round
//! trip). The lock connection alone also gets `idle_session_timeout` =
//! the watchdog: a scheduler whose loop stops querying it (hung, or cut
//! off by a network that drops packets silently) loses its partitions on
//! the server's own clock, whatever TCP says.

use std::time::Duration;

/// The timeouts of the store's sessions. Each zero duration turns its
/// setting off (PostgreSQL's and the operating system's defaults apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgTimeouts {
    /// Idle time before the first TCP keepalive probe, both ends
    /// (`WARREN_PG_KEEPALIVE_IDLE`, default 5 s).
    pub keepalive_idle: Duration,
    /// Between probes (`WARREN_PG_KEEPALIVE_INTERVAL`, default 2 s).
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is dropped
    /// (`WARREN_PG_KEEPALIVE_RETRIES`, default 3): a dead peer is noticed
    /// within idle + interval × retries = 11 s.
    pub keepalive_retries: u32,
    /// How long sent data may stay unacknowledged before the connection is
    /// dropped, both ends (`WARREN_PG_TCP_USER_TIMEOUT`, default 11 s; Linux).
    pub tcp_user_timeout: Duration,
    /// A session idle inside a transaction this long is ended by the
    /// server, releasing its row locks (`WARREN_PG_IDLE_IN_TRANSACTION_TIMEOUT`,
    /// default 5 s). A batch sends all its statements at once, so only a
    /// scheduler cut off or hung mid-batch ever reaches it.
    pub idle_in_transaction: Duration,
    /// Longest wait for a lock (`WARREN_PG_LOCK_TIMEOUT`, default 5 s): a
    /// batch that waits longer fails (the scheduler stands by and leads
    /// again); a takeover's epoch bump that waits longer is retried at the
    /// next balance tick.
    pub lock_timeout: Duration,
    /// `idle_session_timeout` of the lock connection: the server ends it
    /// (releasing the partitions) after this long without a query. The
    /// scheduler sets it to its watchdog (`WARREN_WATCHDOG`, default 10 s);
    /// needs PostgreSQL 14 (older servers: a warning, and only the
    /// keepalives and the scheduler's own watchdog apply).
    pub lock_idle: Duration,
}

impl Default for PgTimeouts {
    fn default() -> Self {
        PgTimeouts {
            keepalive_idle: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(2),
            keepalive_retries: 3,
            tcp_user_timeout: Duration::from_secs(11),
            idle_in_transaction: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(5),
            lock_idle: Duration::from_secs(10),
        }
    }
}

impl PgTimeouts {
    /// Sets the client side on `config`: keepalives and `tcp_user_timeout`.
    pub(super) fn apply(&self, config: &mut tokio_postgres::Config) {
        if !self.keepalive_idle.is_zero() {
            config
                .keepalives(true)
                .keepalives_idle(self.keepalive_idle)
                .keepalives_retries(self.keepalive_retries);
            if !self.keepalive_interval.is_zero() {
                config.keepalives_interval(self.keepalive_interval);
            }
        }
        if !self.tcp_user_timeout.is_zero() {
            config.tcp_user_timeout(self.tcp_user_timeout);
        }
    }

    /// The server side, as startup options (`-c name=value ...`).
    pub(super) fn session_options(&self) -> String {
        let mut out = Vec::new();
        let mut set = |name: &str, value: u128| out.push(format!("-c {name}={value}"));
        if !self.keepalive_idle.is_zero() {
            set("tcp_keepalives_idle", secs(self.keepalive_idle));
            if !self.keepalive_interval.is_zero() {
                set("tcp_keepalives_interval", secs(self.keepalive_interval));
            }
            set("tcp_keepalives_count", u128::from(self.keepalive_retries));
        }
        if !self.tcp_user_timeout.is_zero() {
            set("tcp_user_timeout", self.tcp_user_timeout.as_millis());
        }
        if !self.idle_in_transaction.is_zero() {
            set(
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction.as_millis(),
            );
        }
        if !self.lock_timeout.is_zero() {
            set("lock_timeout", self.lock_timeout.as_millis());
        }
        out.join(" ")
    }
}

/// Whole seconds, at least 1 (the server's keepalive settings are seconds).
fn secs(d: Duration) -> u128 {
    u128::from(d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(t: PgTimeouts, expected: &str) {
        assert_eq!(t.session_options(), expected);
    }

    #[test]
    fn session_options_name_every_timeout_that_is_set() {
        check(
            PgTimeouts::default(),
            "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 \
             -c tcp_user_timeout=11000 -c idle_in_transaction_session_timeout=5000 -c lock_timeout=5000",
        );
        let off = PgTimeouts {
            keepalive_idle: Duration::ZERO,
            tcp_user_timeout: Duration::ZERO,
            idle_in_transaction: Duration::ZERO,
            lock_timeout: Duration::from_millis(1500),
            ..PgTimeouts::default()
        };
        check(off, "-c lock_timeout=1500");
    }

    #[test]
    fn keepalives_of_less_than_a_second_are_a_second_on_the_server() {
        let t = PgTimeouts {
            keepalive_idle: Duration::from_millis(300),
            ..PgTimeouts::default()
        };
        assert!(t.session_options().starts_with("-c tcp_keepalives_idle=1 "));
    }
}

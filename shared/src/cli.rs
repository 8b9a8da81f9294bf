//! What every Warren binary does the same way: the broker flags and the
//! log setup (feature `cli`; the libraries themselves never read flags or
//! the environment).

use crate::amqp::{AmqpConfig, DEFAULT_AMQP_ADDR, DEFAULT_NAMESPACE, QueueType};
use std::path::PathBuf;

/// `--amqp-addr`, `--namespace`, `--tls-ca-file` and their variables.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Broker address (amqp://user:pass@host:port/vhost, or amqps://); a
    /// cluster's nodes as several addresses separated by commas.
    #[arg(long, global = true, env = "AMQP_ADDR", default_value = DEFAULT_AMQP_ADDR, hide_env_values = true)]
    pub amqp_addr: String,
    /// Prefix of every exchange and queue name.
    #[arg(long, global = true, env = "WARREN_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// PEM file of certificates to trust for amqps:// besides the system's.
    #[arg(long, global = true, env = "WARREN_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Warren's durable queues: classic (priority task queues) or quorum
    /// (replicated, with a delivery limit; no priorities before RabbitMQ
    /// 4.3). Every process of a namespace must use the same.
    #[arg(long, global = true, env = "WARREN_QUEUE_TYPE", value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
}

impl BrokerArgs {
    /// The typed configuration, with the TLS roots file read in.
    pub fn config(&self) -> std::io::Result<AmqpConfig> {
        let mut config = AmqpConfig::new(self.amqp_addr.clone(), self.namespace.clone())
            .with_tls_ca_file(self.tls_ca_file.as_deref())?;
        config.queue_type = self.queue_type;
        Ok(config)
    }
}

/// Logs to stderr at `RUST_LOG`, or at `default` (e.g. `"info"`) when it is
/// unset or invalid. `WARREN_LOG_FORMAT=json` writes one JSON object per
/// line (timestamp, level, target, message and every field, such as
/// `workflow` and `task`) for log shippers; anything else, or nothing,
/// writes text. An unknown format is reported, not ignored.
pub fn init_logging(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let format = std::env::var("WARREN_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.as_str() {
        "json" => builder.json().flatten_event(true).init(),
        other => {
            // Colours only for a person: none in log files and pipes.
            builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            if !matches!(other, "" | "text") {
                tracing::warn!(
                    format = other,
                    "WARREN_LOG_FORMAT must be `text` or `json`; logging text"
                );
            }
        }
    }
}

/// A duration written as one number and a unit (`1500ms`, `90s`, `10m`,
/// `2h`, `1d`), in milliseconds; the error says what is expected.
pub fn duration_ms(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s}: expected a number and a unit, e.g. 90s or 10m"))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(per).ok_or_else(|| format!("{s}: too long"))
}

#[cfg(test)]
mod duration_tests {
    #[test]
    fn durations_read_as_documented() {
        for (s, ms) in [
            ("1500ms", 1500),
            ("90s", 90_000),
            ("10m", 600_000),
            ("2h", 7_200_000),
            ("7d", 604_800_000),
        ] {
            assert_eq!(super::duration_ms(s), Ok(ms), "{s}");
        }
        for bad in ["", "7", "d", "7w", "-1d", "99999999999999999999d"] {
            assert!(super::duration_ms(bad).is_err(), "{bad}");
        }
    }
}

//! A session's consumers: one channel per consumed queue (the requests,
//! the results, and each owned partition's queue), each with its prefetch,
//! all feeding the loop one stream of [`Inbound`] messages. A consumer
//! whose stream ends says so as [`Inbound::Ended`], a fault of the session.

use crate::config::SchedulerConfig;
use futures_lite::StreamExt;
use lapin::{
    Channel, Connection,
    message::Delivery,
    options::{BasicConsumeOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
};
use tokio::sync::mpsc;
use warren_shared::Topology;

use super::SchedulerError;

/// A message for the loop, from one of the session's consumers.
// Deliveries are the common case; boxing them to shrink the rare `Ended`
// would allocate once per message.
#[allow(clippy::large_enum_variant)]
pub(super) enum Inbound {
    Request(Delivery),
    /// From the control requests' own queue (never held for the budget).
    Control(Delivery),
    Result(Delivery),
    /// From the partition queue this scheduler owns that is consumed on
    /// `Consumers::owned_ch[i]`: a result, or a request forwarded by the
    /// scheduler that received it.
    Owned(usize, Delivery),
    Ended {
        queue: String,
        reason: String,
    },
}

impl Inbound {
    /// The size of the delivery's body (0 for `Ended`).
    pub(super) fn body_len(&self) -> usize {
        match self {
            Inbound::Request(d)
            | Inbound::Control(d)
            | Inbound::Result(d)
            | Inbound::Owned(_, d) => d.data.len(),
            Inbound::Ended { .. } => 0,
        }
    }
}

/// The consuming channels of a session (acks go back on them) and the
/// stream of what they receive.
pub(super) struct Consumers {
    pub(super) rx: mpsc::Receiver<Inbound>,
    pub(super) requests_ch: Channel,
    pub(super) control_ch: Channel,
    pub(super) results_ch: Channel,
    /// The owned partitions' queues, in the order of `owned` (partitioned
    /// stores only).
    pub(super) owned_ch: Vec<Channel>,
}

/// Consumes the owned partitions' queues (when `partitioned`), then the
/// requests and the results.
pub(super) async fn start(
    conn: &Connection,
    cfg: &SchedulerConfig,
    topology: &Topology,
    owned: &[u16],
    partitioned: bool,
) -> Result<Consumers, SchedulerError> {
    // Prefetch is counted in messages: capped so that what the broker
    // may hand over at once stays within `max_in_flight_bytes`.
    let b = &cfg.bounds;
    let requests_prefetch = b.prefetch(cfg.requests_prefetch, cfg.limits.max_body_bytes, 4);
    let results_prefetch = b.prefetch(cfg.results_prefetch, b.max_result_bytes, 16);
    let (tx, rx) = mpsc::channel::<Inbound>(
        2 * requests_prefetch as usize
            + results_prefetch as usize * (1 + owned.len() * usize::from(partitioned))
            + 16,
    );
    // The queues of the partitions this scheduler owns, each on a
    // channel of its own: delivery tags are per channel, and a
    // multiple ack is only right when one consumer's deliveries arrive
    // in order.
    let mut owned_ch = Vec::new();
    if partitioned {
        for (i, &p) in owned.iter().enumerate() {
            let queue = topology.partition_queue(p);
            owned_ch.push(
                start_consumer(conn, &queue, results_prefetch, tx.clone(), move |d| {
                    Inbound::Owned(i, d)
                })
                .await?,
            );
        }
    }
    let requests_ch = start_consumer(
        conn,
        &topology.workflows(),
        requests_prefetch,
        tx.clone(),
        Inbound::Request,
    )
    .await?;
    let control_ch = start_consumer(
        conn,
        &topology.control_requests(),
        requests_prefetch,
        tx.clone(),
        Inbound::Control,
    )
    .await?;
    let results_ch = start_consumer(
        conn,
        &topology.results(),
        results_prefetch,
        tx,
        Inbound::Result,
    )
    .await?;
    Ok(Consumers {
        rx,
        requests_ch,
        control_ch,
        results_ch,
        owned_ch,
    })
}

/// Consumes `queue` on a channel of its own, sending each delivery to `tx`
/// wrapped by `wrap`, and [`Inbound::Ended`] when the stream ends.
async fn start_consumer(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    tx: mpsc::Sender<Inbound>,
    wrap: impl Fn(Delivery) -> Inbound + Send + 'static,
) -> Result<Channel, SchedulerError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(warren_shared::Error::amqp("channel.open"))?;
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(warren_shared::Error::amqp("basic.qos"))?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            ShortString::from(format!("warren-scheduler:{queue}")),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(warren_shared::Error::amqp("basic.consume"))?;
    let queue = queue.to_owned();
    tokio::spawn(async move {
        let reason = loop {
            match consumer.next().await {
                Some(Ok(d)) => {
                    if tx.send(wrap(d)).await.is_err() {
                        return; // the loop has stopped
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the broker cancelled the consumer or closed the channel".to_owned(),
            }
        };
        let _ = tx.send(Inbound::Ended { queue, reason }).await;
    });
    Ok(ch)
}

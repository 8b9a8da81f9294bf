//! Reaching RabbitMQ: connection settings, connecting with the password kept
//! out of every log line and error, and confirmed publishing.

pub use crate::redact::redact_addr;
use crate::{
    error::Error,
    wire::{
        CONTENT_TYPE, HEADER_DEAD_QUEUE, HEADER_DEAD_REASON, HEADER_PROTOCOL, PROTOCOL_VERSION,
    },
};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    PublisherConfirm,
    message::Delivery,
    options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable, LongString},
};

/// Default broker address: the local RabbitMQ's default vhost.
pub const DEFAULT_AMQP_ADDR: &str = "amqp://127.0.0.1:5672/%2f";
/// Default namespace: every exchange and queue name starts with it.
pub const DEFAULT_NAMESPACE: &str = "warren";

/// Where the broker is and which deployment on it to use.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost`, or `amqps://` for TLS
    /// (default [`DEFAULT_AMQP_ADDR`]); a cluster's nodes as several such
    /// addresses separated by commas, tried in turn (see
    /// [`crate::addresses`]).
    pub addr: String,
    /// Prefix of every name (default [`DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// PEM certificates to trust for `amqps://` besides the system's roots
    /// (a private CA, a self-signed broker). Default none.
    pub tls_ca_pem: Option<String>,
    /// The kind of Warren's durable queues (default classic). Every
    /// process of a namespace must use the same: a queue declared with
    /// other arguments is a topology conflict.
    pub queue_type: QueueType,
}

/// What Warren's durable queues are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum QueueType {
    /// Classic queues; task queues are priority queues (`x-max-priority`).
    #[default]
    Classic,
    /// Quorum queues (replicated on a cluster), with a delivery limit and
    /// dead-lettering to `{ns}.dead`. RabbitMQ before 4.3 has no priorities
    /// in them: only the scheduler's own order applies.
    Quorum,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            addr: DEFAULT_AMQP_ADDR.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            tls_ca_pem: None,
            queue_type: QueueType::Classic,
        }
    }
}

impl AmqpConfig {
    /// The given address and namespace, no extra TLS roots.
    pub fn new(addr: impl Into<String>, namespace: impl Into<String>) -> AmqpConfig {
        AmqpConfig {
            addr: addr.into(),
            namespace: namespace.into(),
            tls_ca_pem: None,
            queue_type: QueueType::Classic,
        }
    }

    /// The names of this namespace, declared as `queue_type` says.
    pub fn topology(&self) -> crate::Topology {
        crate::Topology::new(self.namespace.clone()).with_queue_type(self.queue_type)
    }

    /// Trusts the PEM certificates in `path` (when given) for `amqps://` too.
    pub fn with_tls_ca_file(
        mut self,
        path: Option<&std::path::Path>,
    ) -> std::io::Result<AmqpConfig> {
        let Some(path) = path else {
            return Ok(self);
        };
        let pem = std::fs::read_to_string(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot read TLS CA file {}: {e}", path.display()),
            )
        })?;
        self.tls_ca_pem = Some(pem);
        Ok(self)
    }

    /// Opens a connection named `name` (shown in the management UI), with
    /// this configuration's TLS roots for `amqps://`.
    pub async fn connect(&self, name: &str) -> Result<Connection, Error> {
        connect_with(&self.addr, name, self.tls_ca_pem.as_deref()).await
    }
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("addr", &crate::addresses::redact(&self.addr))
            .field("namespace", &self.namespace)
            .field("tls_ca", &self.tls_ca_pem.as_ref().map(|_| "custom"))
            .field("queue_type", &self.queue_type)
            .finish()
    }
}

/// Opens a connection named `name` (shown in the management UI) to `addr`
/// (one address or a comma-separated list), trusting only the system's
/// roots for `amqps://`.
pub async fn connect(addr: &str, name: &str) -> Result<Connection, Error> {
    connect_with(addr, name, None).await
}

/// How long each address of a list (several brokers in `AMQP_ADDR`) gets
/// to open a connection before the next is tried: a node that accepts TCP
/// but does not answer must not hold up the others. A single address has
/// no such limit (the caller's reconnect loop is its retry).
pub const CONNECT_TIMEOUT_PER_ADDRESS: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens a connection to the first address of `addr` (one address, or
/// several separated by commas, see [`crate::addresses`]) that accepts
/// it, trying each once in [`crate::addresses::attempts`]'s order. The
/// error, when none does, names them all (passwords hidden) and carries
/// the last one's cause.
async fn connect_with(
    addr: &str,
    name: &str,
    tls_ca_pem: Option<&str>,
) -> Result<Connection, Error> {
    let attempts = crate::addresses::attempts(addr);
    let limit = (attempts.len() > 1).then_some(CONNECT_TIMEOUT_PER_ADDRESS);
    let mut last = None;
    for one in attempts {
        match connect_one(one, name, tls_ca_pem, limit).await {
            Ok(conn) => return Ok(conn),
            Err(error) => {
                tracing::debug!(addr = %redact_addr(one), %error, "Broker address refused the connection");
                last = Some(error);
            }
        }
    }
    Err(Error::Connect {
        addr: crate::addresses::redact(addr),
        source: last.expect("at least one address is tried"),
    })
}

/// One connection attempt to the single address `addr`, within `limit`.
async fn connect_one(
    addr: &str,
    name: &str,
    tls_ca_pem: Option<&str>,
    limit: Option<std::time::Duration>,
) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: tls_ca_pem.map(str::to_owned),
    };
    let runtime = lapin::runtime::default_runtime()?;
    let connect = Connection::connect_with_config(addr, props, tls, runtime);
    match limit {
        None => connect.await,
        Some(limit) => tokio::time::timeout(limit, connect)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {limit:?}"),
                )
                .into())
            }),
    }
}

/// How long a graceful close may take before the connection is dropped.
pub const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Closes `conn` gracefully (code 200), giving up after [`CLOSE_TIMEOUT`]:
/// a close that the broker or the client library never completes must not
/// keep a process from stopping. Unacked deliveries return to their queues
/// either way.
pub async fn close(conn: &Connection, reason: &str) {
    match tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, reason.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "Connection already closed"),
        Err(_) => {
            tracing::warn!(timeout = ?CLOSE_TIMEOUT, "Connection close not acknowledged; dropping it")
        }
    }
}

/// Opens a channel with publisher confirms enabled.
pub async fn confirm_channel(conn: &Connection) -> Result<Channel, Error> {
    let ch = conn
        .create_channel()
        .await
        .map_err(Error::amqp("channel.open"))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(Error::amqp("confirm.select"))?;
    Ok(ch)
}

/// A private queue: server-named, exclusive to `conn` (it goes with the
/// connection), bound to each `(exchange, routing key)` of `bindings`, and
/// consumed without acks on a channel of its own. For replies, events and
/// notices, where a message lost with the connection is asked for again or
/// replaced.
pub async fn private_queue(
    conn: &Connection,
    bindings: &[(&str, &str)],
) -> Result<(Channel, String, Consumer), Error> {
    let ch = conn
        .create_channel()
        .await
        .map_err(Error::amqp("channel.open"))?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = ch
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .map_err(Error::amqp("queue.declare"))?;
    for (exchange, key) in bindings {
        ch.queue_bind(
            queue.name().clone(),
            (*exchange).into(),
            (*key).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(Error::amqp("queue.bind"))?;
    }
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let consumer = ch
        .basic_consume(
            queue.name().clone(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .map_err(Error::amqp("basic.consume"))?;
    Ok((ch, queue.name().as_str().to_owned(), consumer))
}

/// Properties every Warren message carries: JSON, persistent, versioned.
pub fn json_properties() -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        HEADER_PROTOCOL.into(),
        AMQPValue::LongLongInt(PROTOCOL_VERSION),
    );
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// One message for [`publish`]: where it goes, and what it is.
#[derive(Debug)]
pub struct Publish<'a> {
    /// The exchange; `""` is the default exchange, which routes to the
    /// queue the routing key names.
    pub exchange: &'a str,
    /// The routing key; for the default exchange, the queue's name.
    pub routing_key: &'a str,
    /// The broker returns the message if no queue takes it, and
    /// [`confirmed`] fails with [`Error::Unroutable`].
    pub mandatory: bool,
    /// The message body (JSON for Warren's messages).
    pub body: &'a [u8],
    /// Its properties; Warren's start from [`json_properties`].
    pub properties: BasicProperties,
}

/// Starts a publish; await the returned confirm with [`confirmed`].
pub async fn publish(ch: &Channel, msg: Publish<'_>) -> Result<PublisherConfirm, Error> {
    ch.basic_publish(
        msg.exchange.into(),
        msg.routing_key.into(),
        BasicPublishOptions {
            mandatory: msg.mandatory,
            immediate: false,
        },
        msg.body,
        msg.properties,
    )
    .await
    .map_err(Error::amqp("basic.publish"))
}

/// Waits for a publish's confirm: a nack or a returned mandatory message is
/// an error.
pub async fn confirmed(
    confirm: PublisherConfirm,
    exchange: &str,
    routing_key: &str,
) -> Result<(), Error> {
    match confirm.await.map_err(Error::amqp("publisher confirm"))? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(Error::Unroutable {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }),
        Confirmation::Nack(_) => Err(Error::PublishNacked {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }),
    }
}

/// The broker's refusal of a message as too large, from the error that
/// closed the publishing channel: (the message's size, the broker's
/// `max_message_size`), read from its text ("message size 209717188 is
/// larger than configured max size 134217728"). `None` for any other error.
pub fn refused_size(e: &Error) -> Option<(usize, usize)> {
    let text = e.to_string();
    let at = text.find("message size ")?;
    let rest = &text[at + "message size ".len()..];
    let size: usize = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let max_at = rest.find("max size ")?;
    let max: usize = rest[max_at + "max size ".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((size, max))
}

/// The longest AMQP short string (`message_id`, `correlation_id`,
/// `reply_to`, ...): lapin panics on a longer one.
pub const MAX_SHORT_STRING: usize = 255;

/// `props` with `message_id` set to `id`, or unchanged when `id` does not
/// fit an AMQP short string (a workflow id and a task id of 128
/// characters each make a longer `{workflow}/{task}/{attempt}`): the id is
/// informational, the body carries what identifies the message.
pub fn with_message_id(props: BasicProperties, id: &str) -> BasicProperties {
    if id.len() <= MAX_SHORT_STRING {
        props.with_message_id(id.into())
    } else {
        props
    }
}

/// An integer header of any AMQP integer type.
pub fn header_int(props: &BasicProperties, key: &str) -> Option<i64> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

/// Properties for dead-lettering `delivery`: its own, plus why and from where.
pub fn dead_letter_properties(delivery: &Delivery, queue: &str, reason: &str) -> BasicProperties {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        HEADER_DEAD_REASON.into(),
        AMQPValue::LongString(LongString::from(reason)),
    );
    headers.insert(
        HEADER_DEAD_QUEUE.into(),
        AMQPValue::LongString(LongString::from(queue)),
    );
    delivery
        .properties
        .clone()
        .with_delivery_mode(2)
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::{AmqpConfig, Error, refused_size};

    #[test]
    fn debug_hides_the_password() {
        for addr in [
            "amqp://u:pa/ss@h/vhost",
            "amqps://u:pa%2Fss@h/vhost?password=pa/ss",
        ] {
            let shown = format!("{:?}", AmqpConfig::new(addr, "ns"));
            assert!(
                !shown.contains("pa/ss") && !shown.contains("pa%2Fss"),
                "{shown}"
            );
            assert!(shown.contains("u:***@h/vhost"), "{shown}");
        }
    }

    #[test]
    fn reads_the_size_refusal() {
        let e = Error::TopologyConflict {
            kind: "queue",
            name: "x".into(),
            detail: "PRECONDITION_FAILED - message size 209717188 is larger than configured max size 134217728".into(),
        };
        assert_eq!(refused_size(&e), Some((209_717_188, 134_217_728)));
        let other = Error::Unroutable {
            exchange: "e".into(),
            routing_key: "message size".into(),
        };
        assert_eq!(refused_size(&other), None);
    }
}

//! Reaching RabbitMQ: connection settings, connecting with the password kept
//! out of every log line and error, and confirmed publishing.

use crate::{
    error::Error,
    wire::{
        CONTENT_TYPE, HEADER_DEAD_QUEUE, HEADER_DEAD_REASON, HEADER_PROTOCOL, PROTOCOL_VERSION,
    },
};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
    message::Delivery,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString},
};

/// Default broker address: the local RabbitMQ's default vhost.
pub const DEFAULT_AMQP_ADDR: &str = "amqp://127.0.0.1:5672/%2f";
/// Default namespace: every exchange and queue name starts with it.
pub const DEFAULT_NAMESPACE: &str = "warren";

/// Where the broker is and which deployment on it to use.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost` (default [`DEFAULT_AMQP_ADDR`]).
    pub addr: String,
    /// Prefix of every name (default [`DEFAULT_NAMESPACE`]).
    pub namespace: String,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            addr: DEFAULT_AMQP_ADDR.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("addr", &redact_addr(&self.addr))
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// `addr` with the password of its user-info replaced by `***`.
pub fn redact_addr(addr: &str) -> String {
    let Some(scheme_end) = addr.find("://").map(|i| i + 3) else {
        return addr.to_owned();
    };
    let rest = &addr[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return addr.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &addr[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => addr.to_owned(),
    }
}

/// Opens a connection named `name` (shown in the management UI).
pub async fn connect(addr: &str, name: &str) -> Result<Connection, Error> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(addr, props)
        .await
        .map_err(|source| Error::Connect {
            addr: redact_addr(addr),
            source,
        })
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

/// Starts a publish; await the returned confirm with [`confirmed`].
pub async fn publish(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    body: &[u8],
    props: BasicProperties,
) -> Result<PublisherConfirm, Error> {
    ch.basic_publish(
        exchange.into(),
        routing_key.into(),
        BasicPublishOptions {
            mandatory,
            immediate: false,
        },
        body,
        props,
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
    use super::redact_addr;

    #[test]
    fn redacts_passwords_only() {
        for (input, expected) in [
            (
                "amqp://guest:secret@host:5672/%2f",
                "amqp://guest:***@host:5672/%2f",
            ),
            ("amqps://u:p%40ss@h/vh", "amqps://u:***@h/vh"),
            ("amqp://user@host/", "amqp://user@host/"),
            ("amqp://127.0.0.1:5672/%2f", "amqp://127.0.0.1:5672/%2f"),
            ("amqp://a:b@c", "amqp://a:***@c"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_addr(input), expected, "{input}");
        }
    }
}

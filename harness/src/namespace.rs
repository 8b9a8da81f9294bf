//! A run's own namespace: a fresh name, so that runs and whatever else
//! uses the broker never meet, and its deletion from the broker after.

use warren_shared::{AmqpConfig, Error};

/// `{prefix}-` and 8 random hex digits.
pub fn fresh(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Deletes `amqp`'s namespace (with its `default` task queue) from the
/// broker, on a connection named `connection`.
pub async fn delete(amqp: &AmqpConfig, connection: &str) -> Result<(), Error> {
    let conn = amqp.connect(connection).await?;
    let ch = conn
        .create_channel()
        .await
        .map_err(Error::amqp("channel.open"))?;
    amqp.topology().delete(&ch, &["default".to_owned()]).await?;
    warren_shared::amqp::close(&conn, "done").await;
    Ok(())
}

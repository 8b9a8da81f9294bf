//! The schedulers' PostgreSQL store seen from outside: which process owns
//! a partition, and dropping a run's schema.

use warren_scheduler::store::postgres::schema_of;

/// The pid in a partition's owner (`host:pid`, as a scheduler records it).
pub fn owner_pid(owner: &str) -> Option<u32> {
    owner.rsplit(':').next()?.parse().ok()
}

/// Drops the schema of `namespace` in the PostgreSQL at `url`.
pub async fn drop_schema(url: &str, namespace: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            schema_of(namespace)
        ))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_is_after_the_last_colon() {
        assert_eq!(owner_pid("host:42"), Some(42));
        assert_eq!(owner_pid("fe80::1:7"), Some(7));
        assert_eq!(owner_pid("host"), None);
        assert_eq!(owner_pid(""), None);
    }
}

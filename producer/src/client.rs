//! [`Client`]: submit, wait, status over plain AMQP.
//!
//! Answers come back RPC-style: every request carries `reply_to` (this
//! client's exclusive, server-named queue) and a fresh `correlation_id`,
//! and the scheduler publishes the report there.

use futures_lite::StreamExt;
use lapin::{
    Channel, Connection,
    options::{BasicConsumeOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::oneshot;
use warren_shared::{
    AmqpConfig, Topology, amqp,
    wire::{ControlKind, ControlRequest, WorkflowReport},
};

/// What can go wrong for a producer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Broker(#[from] warren_shared::Error),
    #[error("{0}")]
    InvalidRequest(String),
    #[error(
        "no answer for workflow {workflow} within {after:?}; is a scheduler running on namespace `{namespace}`?"
    )]
    Timeout {
        workflow: String,
        after: Duration,
        namespace: String,
    },
    #[error("the reply consumer stopped: the broker connection was lost")]
    Closed,
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<WorkflowReport>>>>;

/// A connection to Warren through RabbitMQ.
pub struct Client {
    conn: Connection,
    publish: Channel,
    topology: Topology,
    reply_queue: String,
    waiters: Waiters,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.topology.namespace())
            .field("reply_queue", &self.reply_queue)
            .finish()
    }
}

impl Client {
    /// Connects, declares the topology (so requests wait durably even
    /// before a scheduler starts) and opens a private reply queue.
    pub async fn connect(config: &AmqpConfig) -> Result<Client, ClientError> {
        let topology = Topology::new(config.namespace.clone());
        let conn = amqp::connect(&config.addr, "warren-producer").await?;
        let setup = conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        topology.declare(&setup).await?;
        let publish = amqp::confirm_channel(&conn).await?;
        let replies = conn
            .create_channel()
            .await
            .map_err(warren_shared::Error::amqp("channel.open"))?;
        let queue = replies
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(warren_shared::Error::amqp("queue.declare"))?;
        let reply_queue = queue.name().as_str().to_owned();
        let mut consumer = replies
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(warren_shared::Error::amqp("basic.consume"))?;
        let waiters: Waiters = Arc::default();
        let routes = waiters.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let Some(corr) = d.properties.correlation_id().as_ref() else {
                    continue;
                };
                let Some(tx) = routes.lock().expect("not poisoned").remove(corr.as_str()) else {
                    continue;
                };
                match serde_json::from_slice::<WorkflowReport>(&d.data) {
                    Ok(report) => {
                        let _ = tx.send(report);
                    }
                    Err(e) => tracing::warn!(error = %e, "Undecodable reply ignored"),
                }
            }
            // Dropping the senders wakes every waiter with `Closed`.
            routes.lock().expect("not poisoned").clear();
        });
        Ok(Client {
            conn,
            publish,
            topology,
            reply_queue,
            waiters,
        })
    }

    /// Gives `request` an id when it has none, and returns it.
    fn ensure_id(request: &mut Value) -> Result<String, ClientError> {
        let obj = request.as_object_mut().ok_or_else(|| {
            ClientError::InvalidRequest("a workflow request must be a JSON object".into())
        })?;
        match obj.get("id") {
            Some(Value::String(id)) => Ok(id.clone()),
            Some(other) => Err(ClientError::InvalidRequest(format!(
                "`id` must be a string, not {other}"
            ))),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                obj.insert("id".into(), Value::String(id.clone()));
                Ok(id)
            }
        }
    }

    async fn publish(&self, body: &[u8], correlation: Option<&str>) -> Result<(), ClientError> {
        let mut props = amqp::json_properties();
        if let Some(c) = correlation {
            props = props
                .with_reply_to(self.reply_queue.as_str().into())
                .with_correlation_id(c.into());
        }
        let exchange = self.topology.workflows();
        let confirm = amqp::publish(&self.publish, &exchange, "", true, body, props).await?;
        amqp::confirmed(confirm, &exchange, "").await?;
        Ok(())
    }

    /// Publishes a workflow request (confirmed by the broker) and returns
    /// its id. The outcome is not awaited.
    pub async fn submit(&self, mut request: Value) -> Result<String, ClientError> {
        let id = Self::ensure_id(&mut request)?;
        let body = serde_json::to_vec(&request).expect("a Value always serialises");
        self.publish(&body, None).await?;
        Ok(id)
    }

    /// Publishes a request and waits for its outcome (or rejection).
    pub async fn submit_and_wait(
        &self,
        mut request: Value,
        timeout: Duration,
    ) -> Result<WorkflowReport, ClientError> {
        let id = Self::ensure_id(&mut request)?;
        let body = serde_json::to_vec(&request).expect("a Value always serialises");
        self.ask(&id, &body, timeout).await
    }

    /// Publishes a request body as it is (no id is added, nothing is
    /// checked here) and waits for the answer: for bodies produced by other
    /// tools, and for testing the scheduler's validation.
    pub async fn submit_bytes_and_wait(
        &self,
        body: &[u8],
        timeout: Duration,
    ) -> Result<WorkflowReport, ClientError> {
        self.ask("(unnamed)", body, timeout).await
    }

    /// Asks the scheduler for a workflow's current report.
    pub async fn status(&self, id: &str, timeout: Duration) -> Result<WorkflowReport, ClientError> {
        let body = serde_json::to_vec(&ControlRequest {
            control: ControlKind::Status,
            workflow_id: id.to_owned(),
        })
        .expect("wire types always serialise");
        self.ask(id, &body, timeout).await
    }

    async fn ask(
        &self,
        id: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<WorkflowReport, ClientError> {
        let corr = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("not poisoned")
            .insert(corr.clone(), tx);
        if let Err(e) = self.publish(body, Some(&corr)).await {
            self.waiters.lock().expect("not poisoned").remove(&corr);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.waiters.lock().expect("not poisoned").remove(&corr);
                Err(ClientError::Timeout {
                    workflow: id.to_owned(),
                    after: timeout,
                    namespace: self.topology.namespace().to_owned(),
                })
            }
        }
    }

    /// Closes the connection (the reply queue goes with it).
    pub async fn close(self) {
        let _ = self.conn.close(200, "client closing".into()).await;
    }
}

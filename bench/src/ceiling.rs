//! The broker's ceiling: a bare lapin pipeline in which each "task" is two
//! persistent, confirmed, manually acked messages (task to a worker, result
//! back). Tasks/s with many in flight, and µs per round trip one at a time:
//! what any system on this broker and machine could do.

use crate::figures::{BrokerCpu, Figure, percentile};
use anyhow::Context;
use futures_lite::StreamExt;
use lapin::{
    BasicProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use std::{sync::Arc, time::Instant};
use warren_harness::procfs;

/// The broker's ceiling.
pub struct Ceiling {
    pub tasks_per_s: f64,
    /// CPU per 1,000 tasks of the throughput run: this program (producer and
    /// worker together) and the broker.
    pub client_cpu_ms: f64,
    pub broker_cpu_ms: f64,
    pub rtt_us_p50: f64,
    pub rtt_us_p99: f64,
}

/// Measures the ceiling: `n` tasks with many in flight, then 1,000 one at
/// a time.
pub async fn measure(addr: &str, n: usize) -> anyhow::Result<Ceiling> {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (tasks_q, results_q) = (
        format!("bench-ceiling-{id}.tasks"),
        format!("bench-ceiling-{id}.results"),
    );
    let wconn = warren_shared::amqp::connect(addr, "bench ceiling worker").await?;
    let pconn = warren_shared::amqp::connect(addr, "bench ceiling producer").await?;
    let setup = pconn.create_channel().await?;
    for q in [&tasks_q, &results_q] {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        setup
            .queue_declare(q.as_str().into(), durable, FieldTable::default())
            .await?;
    }
    let persistent = BasicProperties::default().with_delivery_mode(2);

    // The worker: take a task, publish its result (confirmed), ack the task.
    let wconsume = wconn.create_channel().await?;
    wconsume.basic_qos(256, BasicQosOptions::default()).await?;
    let wpublish = Arc::new(warren_shared::amqp::confirm_channel(&wconn).await?);
    let mut tasks = wconsume
        .basic_consume(
            tasks_q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let worker = {
        let (results_q, props) = (results_q.clone(), persistent.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = tasks.next().await {
                let (ch, q, props) = (wpublish.clone(), results_q.clone(), props.clone());
                tokio::spawn(async move {
                    let confirm = ch
                        .basic_publish(
                            "".into(),
                            q.as_str().into(),
                            BasicPublishOptions::default(),
                            &d.data,
                            props,
                        )
                        .await;
                    if let Ok(c) = confirm
                        && c.await.is_ok()
                    {
                        let _ = d.ack(BasicAckOptions::default()).await;
                    }
                });
            }
        })
    };

    // The producer: publish tasks (confirmed), consume results (acked).
    let publish = warren_shared::amqp::confirm_channel(&pconn).await?;
    let rconsume = pconn.create_channel().await?;
    rconsume.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut results = rconsume
        .basic_consume(
            results_q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let body = [0u8; 64];

    // Throughput: many in flight.
    let (client_cpu, broker_cpu) = (procfs::cpu_secs(std::process::id()), BrokerCpu::start());
    let started = Instant::now();
    let producer = {
        let (publish, tasks_q, props) = (publish.clone(), tasks_q.clone(), persistent.clone());
        tokio::spawn(async move {
            let mut window = std::collections::VecDeque::new();
            for _ in 0..n {
                let c = publish
                    .basic_publish(
                        "".into(),
                        tasks_q.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        props.clone(),
                    )
                    .await?;
                window.push_back(c);
                if window.len() >= 1000 {
                    window.pop_front().expect("non-empty").await?;
                }
            }
            for c in window {
                c.await?;
            }
            Ok::<_, lapin::Error>(())
        })
    };
    for i in 0..n {
        let d = results.next().await.context("results consumer ended")??;
        if i % 100 == 99 || i == n - 1 {
            rconsume
                .basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                .await?;
        }
    }
    let elapsed = started.elapsed();
    let client_cpu_ms = (procfs::cpu_secs(std::process::id()) - client_cpu) * 1e6 / n as f64;
    let broker_cpu_ms = broker_cpu.per_1000(n);
    producer.await??;
    let tasks_per_s = n as f64 / elapsed.as_secs_f64();

    // Latency: one at a time.
    let mut rtts = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        publish
            .basic_publish(
                "".into(),
                tasks_q.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                persistent.clone(),
            )
            .await?
            .await?;
        let d = results.next().await.context("results consumer ended")??;
        d.ack(BasicAckOptions::default()).await?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rtts.sort_by(f64::total_cmp);
    worker.abort();
    for q in [&tasks_q, &results_q] {
        setup
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    warren_shared::amqp::close(&wconn, "done").await;
    warren_shared::amqp::close(&pconn, "done").await;
    Ok(Ceiling {
        tasks_per_s,
        client_cpu_ms,
        broker_cpu_ms,
        rtt_us_p50: percentile(&rtts, 0.5),
        rtt_us_p99: percentile(&rtts, 0.99),
    })
}

impl Ceiling {
    /// The ceiling's own figures, first in every round.
    pub fn figures(&self) -> Vec<Figure> {
        vec![
            Figure {
                name: "ceiling: tasks/s (many in flight)".into(),
                value: self.tasks_per_s,
                unit: "tasks/s",
                ratio: None,
                target: "",
            },
            Figure {
                name: "ceiling: round trip p50".into(),
                value: self.rtt_us_p50,
                unit: "µs",
                ratio: None,
                target: "",
            },
            Figure {
                name: "ceiling: round trip p99".into(),
                value: self.rtt_us_p99,
                unit: "µs",
                ratio: None,
                target: "",
            },
            Figure::info(
                "ceiling: client CPU per 1000 tasks",
                self.client_cpu_ms,
                "ms",
            ),
            Figure::info(
                "ceiling: broker CPU per 1000 tasks",
                self.broker_cpu_ms,
                "ms",
            ),
        ]
    }
}

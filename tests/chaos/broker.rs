//! The broker, handled from outside: restarting it and cutting its
//! connections (faults), planting undecodable messages, and reading what
//! its queues hold at the end.

use crate::{BAD_RESULTS, BAD_TASKS};
use anyhow::{Context, bail};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use warren_shared::{AmqpConfig, topology::PARTITIONS};

pub fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("run rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn broker_port_open() -> bool {
    std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5672".parse().expect("addr"),
        Duration::from_millis(200),
    )
    .is_ok()
}

pub fn restart_broker(hard: bool) -> anyhow::Result<()> {
    if hard {
        // SIGKILL the broker's VM, then start a fresh one.
        let status = Command::new("pkill")
            .args(["-9", "-f", "beam.smp"])
            .status()?;
        if !status.success() {
            bail!("no broker process to kill");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while broker_port_open() {
            if Instant::now() > deadline {
                bail!("the killed broker still listens");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("rabbitmq-server -detached failed");
        }
    } else {
        rabbitmqctl(&["stop_app"])?;
        rabbitmqctl(&["start_app"])?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !broker_port_open() {
        if Instant::now() > deadline {
            bail!("the broker did not come back within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    rabbitmqctl(&["await_startup"])
}

/// The bodies of the undecodable results and task messages planted.
pub fn planted() -> (Vec<String>, Vec<String>) {
    (
        (0..BAD_RESULTS)
            .map(|i| format!("not a result {i}"))
            .collect(),
        (0..BAD_TASKS)
            .map(|i| format!("{{\"not\": \"a task {i}\"}}"))
            .collect(),
    )
}

pub async fn plant_dead_letters(amqp: &AmqpConfig) -> anyhow::Result<()> {
    let topology = amqp.topology();
    let conn = warren_shared::amqp::connect(&amqp.addr, "chaos planter").await?;
    let ch = warren_shared::amqp::confirm_channel(&conn).await?;
    topology.declare(&ch).await?;
    topology.declare_task_queue(&ch, "default").await?;
    let (results, tasks) = planted();
    let plants = results
        .into_iter()
        .map(|b| (topology.results(), String::new(), b))
        .chain(
            tasks
                .into_iter()
                .map(|b| (topology.tasks_exchange(), "default".to_owned(), b)),
        );
    for (exchange, key, body) in plants {
        let confirm = ch
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body.as_bytes(),
                warren_shared::amqp::json_properties(),
            )
            .await?;
        warren_shared::amqp::confirmed(confirm, &exchange, &key).await?;
    }
    warren_shared::amqp::close(&conn, "planted").await;
    Ok(())
}

/// The bodies in the dead-letter queue, read without taking them (they
/// return to the queue when the channel closes unacked).
pub async fn dead_letters(amqp: &AmqpConfig) -> anyhow::Result<Vec<String>> {
    let topology = amqp.topology();
    let conn = warren_shared::amqp::connect(&amqp.addr, "chaos dead-letter reader").await?;
    let ch = conn.create_channel().await?;
    let mut bodies = Vec::new();
    while let Some(m) = ch
        .basic_get(
            topology.dead().as_str().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await?
    {
        bodies.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    warren_shared::amqp::close(&conn, "read").await;
    Ok(bodies)
}

/// Messages waiting in each of the namespace's queues.
/// On PostgreSQL, the partition queues too.
pub async fn queue_depths(
    amqp: &AmqpConfig,
    partitioned: bool,
) -> anyhow::Result<BTreeMap<String, u32>> {
    let topology = amqp.topology();
    let conn = warren_shared::amqp::connect(&amqp.addr, "chaos checker").await?;
    let ch = conn.create_channel().await?;
    let mut depths = BTreeMap::new();
    let mut queues = vec![
        topology.workflows(),
        topology.control_requests(),
        topology.results(),
        topology.task_queue("default"),
        topology.suspect_queue("default"),
        topology.dead(),
    ];
    if partitioned {
        queues.extend((0..PARTITIONS).map(|p| topology.partition_queue(p)));
    }
    for q in queues {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let info = ch
            .queue_declare(q.as_str().into(), passive, Default::default())
            .await?;
        depths.insert(q, info.message_count());
    }
    warren_shared::amqp::close(&conn, "checked").await;
    Ok(depths)
}

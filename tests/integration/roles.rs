//! Least privilege on the broker (docs/security.md): one RabbitMQ user per
//! role with exactly the documented permissions (`warren_shared::roles`,
//! granted with `rabbitmqctl` as an operator would), a workflow run by
//! them, and each role refused what it must not do.

use crate::support::{DEADLINE, Env, Events, amqp_addr};
use lapin::{
    BasicProperties, Connection,
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions},
    types::FieldTable,
};
use serde_json::json;
use std::process::Command;
use warren_shared::{
    AmqpConfig, Topology,
    roles::{self, Role},
    wire::WorkflowStatus,
};

/// The broker users of one test, deleted when it ends (also on failure).
struct Users {
    names: Vec<String>,
}

impl Drop for Users {
    fn drop(&mut self) {
        let deletes: Vec<_> = self
            .names
            .iter()
            .filter_map(|u| {
                Command::new("rabbitmqctl")
                    .args(["-q", "delete_user", u])
                    .spawn()
                    .ok()
            })
            .collect();
        for mut d in deletes {
            let _ = d.wait();
        }
    }
}

/// Runs the `rabbitmqctl` commands in parallel (each starts an Erlang VM)
/// and fails the test on any failure.
fn rabbitmqctl_all(commands: Vec<Vec<String>>) {
    let running: Vec<_> = commands
        .into_iter()
        .map(|args| {
            let child = Command::new("rabbitmqctl")
                .arg("-q")
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("rabbitmqctl is installed with RabbitMQ");
            (args, child)
        })
        .collect();
    for (args, child) in running {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `amqp_addr()` with `user:password` as its user-info.
fn addr_of(user: &str, password: &str) -> String {
    let addr = amqp_addr();
    let (scheme, rest) = addr.split_once("://").unwrap();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{rest}")
}

/// Creates one user per role, granted the role's documented permissions on
/// the default vhost; returns their addresses.
fn create_users(ns: &str) -> (Users, [String; 4]) {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let roles = [
        Role::Scheduler,
        Role::Worker {
            queues: vec!["default".into()],
        },
        Role::Producer,
        Role::Observer,
    ];
    let names: Vec<String> = roles.iter().map(|r| format!("{ns}-{}", r.name())).collect();
    let users = Users {
        names: names.clone(),
    };
    rabbitmqctl_all(
        names
            .iter()
            .map(|u| vec!["add_user".into(), u.clone(), password.clone()])
            .collect(),
    );
    let mut grants = Vec::new();
    for (role, user) in roles.iter().zip(&names) {
        let p = roles::permissions(ns, role);
        grants.push(vec![
            "set_permissions".into(),
            "-p".into(),
            "/".into(),
            user.clone(),
            p.configure,
            p.write,
            p.read,
        ]);
        for t in p.topics {
            grants.push(vec![
                "set_topic_permissions".into(),
                "-p".into(),
                "/".into(),
                user.clone(),
                t.exchange,
                t.write,
                t.read,
            ]);
        }
    }
    rabbitmqctl_all(grants);
    let addrs = names
        .iter()
        .map(|u| addr_of(u, &password))
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    (users, addrs)
}

/// One thing a role might try on the broker.
#[derive(Debug)]
enum Attempt<'a> {
    /// Publish (with a confirm) to `exchange` with `key`.
    Publish(&'a str, &'a str),
    /// Consume from a queue.
    Consume(&'a str),
    /// Bind a server-named queue of its own to `exchange` with `key`.
    Bind(&'a str, &'a str),
}

/// Tries `attempt` on a fresh channel of `conn`; the broker's answer.
async fn attempt(conn: &Connection, attempt: &Attempt<'_>) -> Result<(), String> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    let outcome = async {
        match *attempt {
            Attempt::Publish(exchange, key) => {
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
                ch.basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions::default(),
                    br#"{"forged": true}"#,
                    BasicProperties::default(),
                )
                .await?
                .await?;
            }
            Attempt::Consume(queue) => {
                ch.basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
            Attempt::Bind(exchange, key) => {
                let q = ch
                    .queue_declare(
                        "".into(),
                        lapin::options::QueueDeclareOptions {
                            exclusive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                ch.queue_bind(
                    q.name().clone(),
                    exchange.into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
        }
        // A refused publish closes the channel after the fact: one more
        // round trip on it brings the broker's answer back.
        ch.basic_qos(1, Default::default()).await
    }
    .await;
    let _ = ch.close(200, "tried".into()).await;
    outcome.map_err(|e| e.to_string())
}

async fn assert_refused(conn: &Connection, who: &str, tries: &[Attempt<'_>]) {
    for t in tries {
        match attempt(conn, t).await {
            Err(e) if e.contains("ACCESS_REFUSED") => {}
            other => panic!("{who} should be refused {t:?}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_runs_with_its_documented_permissions_and_is_refused_the_rest() {
    let mut env = Env::new().await;
    let ns = env.amqp.namespace.clone();
    let (_users, [scheduler, worker, producer, observer]) = create_users(&ns);
    let base = env.amqp.clone();
    let as_user = |addr: &str| AmqpConfig {
        addr: addr.to_owned(),
        ..base.clone()
    };

    // The whole system under the narrow grants: a workflow runs.
    let mut config = env.scheduler_config();
    config.amqp = as_user(&scheduler);
    let s = env.scheduler(config);
    let mut wconfig = env.worker_config(&["default"], 2, "least");
    wconfig.amqp = as_user(&worker);
    let (_stop, worker_join) =
        env.stoppable_worker(warren_worker::Registry::with_builtins(), wconfig);
    let mut events = Events::bind(&as_user(&observer), "workflow.*.succeeded").await;
    let client = warren_producer::Client::connect(&as_user(&producer))
        .await
        .expect("a producer of least privilege connects");
    let report = client
        .submit_and_wait(
            json!({"id": "least", "tasks": [
                {"id": "a", "type": "echo", "input": {"n": 1}},
                {"id": "b", "type": "echo", "depends_on": ["a"], "input": "${a.output.n}"}
            ]}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(report.status, WorkflowStatus::Succeeded, "{report:?}");
    assert_eq!(report.tasks["b"].output, Some(json!(1)));
    assert_eq!(report.tasks["b"].worker.as_deref(), Some("least"));
    let (key, _) = events.next().await;
    assert_eq!(key, "workflow.least.succeeded", "the observer reads events");
    events.close().await;

    let t = Topology::new(ns.clone());
    let (workflows, tasks, results, control, requeue, events_x) = (
        t.workflows(),
        t.tasks_exchange(),
        t.results(),
        t.control(),
        t.requeue(),
        t.events(),
    );
    let (task_queue, other_pool, partition) = (
        t.task_queue("default"),
        t.task_queue("other"),
        t.partition_queue(0),
    );

    // A producer submits and reads its replies; it cannot publish task
    // messages, results or control notices, nor read tasks or others'
    // outcomes.
    let p = warren_shared::amqp::connect(&producer, "producer probe")
        .await
        .unwrap();
    assert_refused(
        &p,
        "producer",
        &[
            Attempt::Publish(&tasks, "default"),
            Attempt::Publish(&results, ""),
            Attempt::Publish(&control, ""),
            Attempt::Publish(&requeue, "tasks.default"),
            Attempt::Publish("", &task_queue),
            Attempt::Publish("", &partition),
            Attempt::Publish(&events_x, "workflow.least.succeeded"),
            Attempt::Consume(&task_queue),
            Attempt::Consume(&workflows),
            Attempt::Bind(&events_x, "workflow.#"),
            Attempt::Bind(&tasks, "default"),
        ],
    )
    .await;

    // A worker takes its pool's tasks and publishes results; it cannot
    // submit, control, or reach another pool.
    let w = warren_shared::amqp::connect(&worker, "worker probe")
        .await
        .unwrap();
    assert_refused(
        &w,
        "worker",
        &[
            Attempt::Publish(&workflows, ""),
            Attempt::Publish(&workflows, "control"),
            Attempt::Publish(&tasks, "default"),
            Attempt::Publish(&tasks, "other"),
            Attempt::Publish(&requeue, "tasks.other"),
            Attempt::Publish(&requeue, "suspect.other"),
            Attempt::Publish(&control, ""),
            Attempt::Publish("", &other_pool),
            Attempt::Publish("", &workflows),
            Attempt::Publish(&events_x, "workflow.least.failed"),
            Attempt::Consume(&other_pool),
            Attempt::Consume(&workflows),
            Attempt::Consume(&results),
            Attempt::Bind(&tasks, "other"),
            Attempt::Bind(&requeue, "tasks.other"),
            Attempt::Bind(&events_x, "workflow.#"),
        ],
    )
    .await;

    // An observer reads events and nothing else.
    let o = warren_shared::amqp::connect(&observer, "observer probe")
        .await
        .unwrap();
    assert_refused(
        &o,
        "observer",
        &[
            Attempt::Publish(&workflows, ""),
            Attempt::Publish(&workflows, "control"),
            Attempt::Publish(&events_x, "workflow.least.failed"),
            Attempt::Consume(&workflows),
            Attempt::Consume(&task_queue),
        ],
    )
    .await;
    for c in [&p, &w, &o] {
        warren_shared::amqp::close(c, "probed").await;
    }
    client.close().await;
    s.stop().await;
    env.finish().await;
    let stopped = tokio::time::timeout(DEADLINE, worker_join).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the worker ran without error: {stopped:?}"
    );
}

//! Who may use the scheduler's HTTP endpoint: bearer tokens and their
//! scopes (401, 403), the admin action (a cancel that ends a running
//! workflow), the `Host` check (421, 400), the loopback rule without
//! tokens, and the bounds on requests (413, 431).

use crate::{
    control::held,
    support::{DEADLINE, Env, RunningScheduler, pg_url, wait_until, wait_until_async},
};
use serde_json::{Value, json};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_scheduler::{
    Metrics, SchedulerConfig, SchedulerError,
    http::{Access, Hosts, Scope, Tokens},
    store::StoreLocation,
};
use warren_shared::wire::{TaskState, WorkflowStatus};
use warren_worker::Registry;

const READ: &str = "read-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

/// An answer: status, head (status line and headers), body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends `raw` (a whole request) on a new connection and reads the answer
/// until the server closes it.
async fn send(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut got))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8(got).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    Answer {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `method path` with `Host: addr`, the token if any, `Connection: close`
/// and no body.
async fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Answer {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    send(addr, raw.as_bytes()).await
}

/// A scheduler with `access` on a free loopback port; returns once it
/// listens.
async fn start(env: &Env, access: Access) -> (RunningScheduler, SocketAddr) {
    let config = SchedulerConfig {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        http_access: access,
        ..env.scheduler_config()
    };
    let scheduler = env.scheduler(config);
    wait_until("the endpoint listens", || scheduler.http.get().is_some()).await;
    let addr = *scheduler.http.get().unwrap();
    (scheduler, addr)
}

fn tokens() -> Tokens {
    let mut t = Tokens::default();
    t.add_file(&format!("# the test's\nread {READ}\nadmin {ADMIN}\n"))
        .unwrap();
    t
}

/// Counts handler futures dropped before they finished: a task stopped.
struct Stopped(Arc<AtomicUsize>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_and_a_cancel_by_admin() {
    let mut env = Env::new().await;
    let (scheduler, addr) = start(
        &env,
        Access {
            tokens: tokens(),
            ..Access::default()
        },
    )
    .await;
    // `hang` runs until it is stopped, and counts the stops.
    let stopped = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::with_builtins();
    let counter = stopped.clone();
    registry.register("hang", move |_ctx| {
        let guard = Stopped(counter.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(json!(null))
        }
    });
    env.worker(registry, &["default"], 4, "w");
    let client = env.client.clone();
    let outcome = tokio::spawn(async move {
        client
            .submit_and_wait(
                json!({"id": "ha-1", "tasks": [
                    {"id": "a", "type": "echo"},
                    {"id": "h", "type": "hang", "depends_on": ["a"]},
                    {"id": "z", "type": "echo", "depends_on": ["h"]}
                ]}),
                DEADLINE,
            )
            .await
    });
    wait_until("h running", || {
        Metrics::get(&scheduler.metrics.engine.tasks_dispatched) == 2
    })
    .await;

    // Without a token, or with a wrong one: 401 and the Bearer challenge.
    for path in [
        "/api/workflows/ha-1",
        "/api/workflows",
        "/metrics",
        "/api/whoami",
    ] {
        let a = call(addr, "GET", path, None).await;
        assert_eq!(a.status, 401, "{path}: {}", a.body);
        assert_eq!(
            a.header("www-authenticate"),
            Some("Bearer realm=\"warren\"")
        );
        assert!(a.json()["error"].as_str().unwrap().contains("bearer token"));
        let a = call(addr, "GET", path, Some("not-a-token-of-this-endpoint")).await;
        assert_eq!(a.status, 401, "{path}: {}", a.body);
        assert_eq!(
            a.header("www-authenticate"),
            Some("Bearer realm=\"warren\", error=\"invalid_token\"")
        );
    }
    // The page and /healthz need none; /healthz says three booleans.
    let a = call(addr, "GET", "/workflows/ha-1", None).await;
    assert_eq!(a.status, 200);
    assert!(a.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    wait_until_async("healthy", || async {
        call(addr, "GET", "/healthz", None).await.status == 200
    })
    .await;
    let health = call(addr, "GET", "/healthz", None).await.json();
    assert_eq!(
        health,
        json!({"broker": true, "store": true, "active": true})
    );

    // A read token reads the report, the list, the metrics.
    let a = call(addr, "GET", "/api/workflows/ha-1", Some(READ)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let report = a.json();
    assert_eq!(report["status"], "running");
    assert_eq!(report["tasks"]["h"]["state"], "running");
    let a = call(addr, "GET", "/api/workflows?status=running", Some(READ)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["workflows"][0]["workflow_id"], "ha-1");
    let a = call(addr, "GET", "/metrics", Some(READ)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let who = call(addr, "GET", "/api/whoami", Some(READ)).await.json();
    assert_eq!(who, json!({"scope": "read", "token": true}));
    let who = call(addr, "GET", "/api/whoami", Some(ADMIN)).await.json();
    assert_eq!(who, json!({"scope": "admin", "token": true}));

    // The action: 401 without a token, 403 with a read one.
    let cancel = "/api/workflows/ha-1/cancel";
    let a = call(addr, "POST", cancel, None).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = call(addr, "POST", cancel, Some(READ)).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(
        a.header("www-authenticate"),
        Some("Bearer realm=\"warren\", error=\"insufficient_scope\", scope=\"admin\"")
    );
    // A body over the limit: 413, declared or not, and nothing happens.
    let big = format!(
        "POST {cancel} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Length: 20000\r\nConnection: close\r\n\r\n"
    );
    let a = send(addr, big.as_bytes()).await;
    assert_eq!(a.status, 413, "{}", a.body);
    let chunk = "x".repeat(20000);
    let chunked = format!(
        "POST {cancel} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n4e20\r\n{chunk}\r\n0\r\n\r\n"
    );
    let a = send(addr, chunked.as_bytes()).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(
        Metrics::get(&scheduler.metrics.engine.workflows_cancelled),
        0
    );

    // An admin token cancels: answered with the report the control
    // request's reply carries, once it is committed and published.
    let a = call(addr, "POST", cancel, Some(ADMIN)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let report = a.json();
    assert_eq!(report["workflow_id"], "ha-1");
    assert_eq!(report["status"], "cancelled");
    assert_eq!(report["tasks"]["a"]["state"], "succeeded");
    assert_eq!(report["tasks"]["h"]["state"], "cancelled");
    assert_eq!(report["tasks"]["z"]["state"], "cancelled");
    // The submitter hears it, the worker was told (the running handler
    // is stopped), and the store has it.
    let outcome = outcome.await.unwrap().unwrap();
    assert_eq!(outcome.status, WorkflowStatus::Cancelled);
    assert_eq!(outcome.tasks["h"].state, TaskState::Cancelled);
    wait_until("h stopped on the worker", || {
        stopped.load(Ordering::SeqCst) == 1
    })
    .await;
    let status = env.client.status("ha-1", DEADLINE).await.unwrap();
    assert_eq!(status.status, WorkflowStatus::Cancelled);
    let a = call(addr, "GET", "/api/workflows/ha-1", Some(READ)).await;
    assert_eq!(a.json()["status"], "cancelled");

    // Again, or an unknown workflow: answered as a cancel request is.
    let a = call(addr, "POST", cancel, Some(ADMIN)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["status"], "cancelled");
    let a = call(addr, "POST", "/api/workflows/nope/cancel", Some(ADMIN)).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.json()["status"], "not_found");
    let long = "x".repeat(129);
    let a = call(
        addr,
        "POST",
        &format!("/api/workflows/{long}/cancel"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(
        Metrics::get(&scheduler.metrics.engine.workflows_cancelled),
        1
    );

    // A rerun of the cancelled workflow: admin only; its body checked;
    // answered as the new run starts (its cancelled tasks run again).
    let rerun = "/api/workflows/ha-1/rerun";
    let post = |token: &'static str, path: String, body: &'static str| {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        async move { send(addr, raw.as_bytes()).await }
    };
    let a = post(READ, rerun.into(), "{}").await;
    assert_eq!(a.status, 403, "{}", a.body);
    let a = post(ADMIN, rerun.into(), r#"{"form": ["h"]}"#).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = post(ADMIN, rerun.into(), r#"{"rerun_id": "a b"}"#).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = post(
        ADMIN,
        rerun.into(),
        r#"{"from": ["z"], "rerun_id": "http-1"}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let started = a.json();
    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(started["run"], 2);
    assert_eq!(started["tasks"]["a"]["state"], "succeeded");
    assert_eq!(started["tasks"]["h"]["history"][0]["state"], "cancelled");
    // The same rerun_id: the run it started; another: refused.
    let a = post(ADMIN, rerun.into(), r#"{"rerun_id": "http-1"}"#).await;
    assert_eq!((a.status, &a.json()["run"]), (200, &json!(2)), "{}", a.body);
    let a = post(ADMIN, rerun.into(), "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["status"], "rejected");
    assert_eq!(a.json()["errors"][0]["code"], "workflow_running");
    let a = post(ADMIN, "/api/workflows/nope/rerun".into(), "").await;
    assert_eq!(a.status, 404, "{}", a.body);
    wait_until("h runs again and hangs", || {
        Metrics::get(&scheduler.metrics.engine.tasks_dispatched) >= 3
    })
    .await;
    // Running on the worker: its log shows run 2's attempt.
    let a = call(addr, "GET", "/api/workflows/ha-1", Some(READ)).await;
    assert_eq!(a.json()["tasks"]["h"]["state"], "running", "{}", a.body);
    // One task: its log of attempts (who answered, when), and once the
    // workflow ended, its earlier runs from the stored report.
    let a = call(addr, "GET", "/api/workflows/ha-1/tasks/a", Some(READ)).await;
    let log = &a.json()["attempt_log"];
    assert_eq!(log[0]["attempt"], 1, "{}", a.body);
    assert_eq!(log[0]["status"], "succeeded");
    assert_eq!(log[0]["worker"], "w");
    assert!(log[0]["finished_at"].is_string(), "{}", a.body);
    let a = call(addr, "POST", cancel, Some(ADMIN)).await;
    assert_eq!((a.status, &a.json()["run"]), (200, &json!(2)), "{}", a.body);
    assert_eq!(a.json()["status"], "cancelled");
    // The worker ran run 2's h, though it remembers run 1 cancelled, and
    // stopped it at the second cancel.
    wait_until("run 2's h stopped on the worker", || {
        stopped.load(Ordering::SeqCst) == 2
    })
    .await;
    let a = call(addr, "GET", "/api/workflows/ha-1/tasks/h", Some(READ)).await;
    assert_eq!(a.json()["history"][0]["state"], "cancelled", "{}", a.body);
    assert_eq!(a.json()["state"], "cancelled");

    // What was refused is counted.
    let text = call(addr, "GET", "/metrics", Some(READ)).await.body;
    for sample in [
        "warren_http_refused_total{reason=\"unauthorized\"} 9",
        "warren_http_refused_total{reason=\"forbidden\"} 2",
        "warren_http_refused_total{reason=\"too_large\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == sample),
            "no `{sample}` in\n{text}"
        );
    }
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_are_misdirected_and_requests_bounded() {
    let env = Env::new().await;
    let (scheduler, addr) = start(
        &env,
        Access {
            hosts: Hosts::parse("warren.example, ops.example:8443").unwrap(),
            ..Access::default()
        },
    )
    .await;
    let port = addr.port();
    let get = |host: &str| {
        format!("GET /api/workflows HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    for (host, status) in [
        (format!("127.0.0.1:{port}"), 200),
        (format!("localhost:{port}"), 200),
        ("localhost".to_owned(), 200),
        (format!("[::1]:{port}"), 200),
        ("warren.example".to_owned(), 200),
        ("Warren.Example:9000".to_owned(), 200),
        ("ops.example:8443".to_owned(), 200),
        ("ops.example:8080".to_owned(), 421),
        // DNS rebinding: the attacker's name, resolved to 127.0.0.1.
        (format!("rebind.attacker.example:{port}"), 421),
        (format!("localhost.attacker.example:{port}"), 421),
        ("".to_owned(), 421),
    ] {
        let a = send(addr, get(&host).as_bytes()).await;
        assert_eq!(a.status, status, "Host `{host}`: {}", a.body);
    }
    let a = send(addr, get("evil.example").as_bytes()).await;
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("WARREN_HTTP_HOSTS")
    );
    // The page is checked too; /healthz is not (load balancers probe it
    // by address) and says nothing but three booleans.
    let page = "GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    assert_eq!(send(addr, page.as_bytes()).await.status, 421);
    let health = "GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let a = send(addr, health.as_bytes()).await;
    assert!(a.status == 200 || a.status == 503, "{}", a.body);
    assert_eq!(a.json().as_object().unwrap().len(), 3, "{}", a.body);

    // No Host (HTTP/1.1 or 1.0), two of them: 400. An absolute target's
    // authority is what is checked.
    for raw in [
        "GET /api/workflows HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /api/workflows HTTP/1.0\r\n\r\n".to_owned(),
        "GET /api/workflows HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            .to_owned(),
    ] {
        let a = send(addr, raw.as_bytes()).await;
        assert_eq!(a.status, 400, "{raw:?}: {}", a.body);
    }
    let absolute = "GET http://evil.example/api/workflows HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(send(addr, absolute.as_bytes()).await.status, 421);
    let absolute = format!(
        "GET http://localhost:{port}/api/workflows HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(send(addr, absolute.as_bytes()).await.status, 200);

    // Without tokens: everyone reads, nobody acts.
    let a = call(addr, "GET", "/api/whoami", None).await;
    assert_eq!(a.json(), json!({"scope": "read", "token": false}));
    let a = call(addr, "POST", "/api/workflows/any/cancel", None).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("WARREN_HTTP_ADMIN_TOKEN")
    );

    // Bounded requests: a head over 16 KiB or with over 64 fields (431;
    // a little over, so that the server has read all of it when it
    // answers and closes), query parameters.
    let huge = format!(
        "GET /api/workflows HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "y".repeat(17 * 1024)
    );
    assert_eq!(send(addr, huge.as_bytes()).await.status, 431);
    let fields: String = (0..70).map(|i| format!("X-F{i}: 1\r\n")).collect();
    let many = format!(
        "GET /api/workflows HTTP/1.1\r\nHost: localhost\r\n{fields}Connection: close\r\n\r\n"
    );
    assert_eq!(send(addr, many.as_bytes()).await.status, 431);
    for (path, status) in [
        ("/api/workflows?limit=500&offset=100000", 200),
        ("/api/workflows?limit=1001", 400),
        ("/api/workflows?offset=100001", 400),
        ("/api/workflows?status=weird", 400),
        ("/api/workflows?status=not_found", 400),
        ("/api/workflows?status=cancelled", 200),
    ] {
        let a = call(addr, "GET", path, None).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
    }
    let text = call(addr, "GET", "/metrics", None).await.body;
    assert!(
        text.lines()
            .any(|l| l == "warren_http_refused_total{reason=\"misdirected\"} 10"),
        "{text}"
    );
    scheduler.stop().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_only_with_tokens() {
    let env = Env::new().await;
    // Refused at start, before anything else, with a clear error.
    let config = SchedulerConfig {
        http_addr: Some("0.0.0.0:0".parse().unwrap()),
        ..env.scheduler_config()
    };
    let e = env.scheduler(config).failure().await;
    assert!(matches!(e, SchedulerError::HttpWithoutTokens(_)), "{e:?}");
    let message = e.to_string();
    assert!(message.contains("without tokens"), "{message}");
    assert!(message.contains("WARREN_HTTP_TOKENS_FILE"), "{message}");
    assert!(!e.is_transient());

    // With tokens it listens on every address, and wants them.
    let mut tokens = Tokens::default();
    tokens.add(Scope::Read, READ, "test").unwrap();
    let config = SchedulerConfig {
        http_addr: Some("0.0.0.0:0".parse().unwrap()),
        http_access: Access {
            tokens,
            ..Access::default()
        },
        ..env.scheduler_config()
    };
    let scheduler = env.scheduler(config);
    wait_until("the endpoint listens", || scheduler.http.get().is_some()).await;
    let bound = *scheduler.http.get().unwrap();
    assert!(bound.ip().is_unspecified(), "{bound}");
    let addr: SocketAddr = ([127, 0, 0, 1], bound.port()).into();
    assert_eq!(call(addr, "GET", "/api/workflows", None).await.status, 401);
    let a = call(addr, "GET", "/api/workflows", Some(READ)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    scheduler.stop().await;
    env.finish().await;
}

/// Two schedulers on PostgreSQL: each cancels what it runs, and sends a
/// cancel of what the other runs back with 409 (nowhere to forward an
/// HTTP request to); once ended, either answers with the stored report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cancels_what_it_runs_and_refers_the_rest() {
    let mut env = Env::new().await;
    env.store = StoreLocation::Postgres(pg_url());
    let config = SchedulerConfig {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        http_access: Access {
            tokens: tokens(),
            ..Access::default()
        },
        ..env.scheduler_config()
    };
    let peers: Vec<_> = (0..2).map(|_| env.scheduler(config.clone())).collect();
    wait_until("both schedulers own partitions and listen", || {
        peers
            .iter()
            .all(|p| Metrics::get(&p.metrics.active) == 1 && p.http.get().is_some())
    })
    .await;
    let addrs: Vec<SocketAddr> = peers.iter().map(|p| *p.http.get().unwrap()).collect();
    let mut registry = Registry::with_builtins();
    let (now, _, _gate) = held(&mut registry, "hold");
    env.worker(registry, &["default"], 20, "w");
    // 16 workflows: both schedulers run some (each owns 8 of the 16
    // partitions; all 16 on one side has odds of 2 in 65,536).
    let ids: Vec<String> = (0..16).map(|i| format!("pc-{i}")).collect();
    for id in &ids {
        env.client
            .submit(json!({"id": id, "tasks": [{"id": "h", "type": "hold"}]}))
            .await
            .unwrap();
    }
    wait_until("every task running", || {
        now.load(Ordering::SeqCst) == ids.len()
    })
    .await;
    let mut cancelled_by = [0, 0];
    for id in &ids {
        let path = format!("/api/workflows/{id}/cancel");
        // The owner cancels it; the other answers 409 (so may both, for a
        // moment, while a partition changes hands after the start).
        let deadline = Instant::now() + DEADLINE;
        let owner = 'asked: loop {
            for (i, addr) in addrs.iter().enumerate() {
                let a = call(*addr, "POST", &path, Some(ADMIN)).await;
                match a.status {
                    200 => {
                        assert_eq!(a.json()["status"], "cancelled", "{}", a.body);
                        break 'asked i;
                    }
                    409 => assert!(a.body.contains("another scheduler"), "{}", a.body),
                    other => panic!("{id}: {other} {}", a.body),
                }
            }
            assert!(Instant::now() < deadline, "nobody cancelled {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        cancelled_by[owner] += 1;
        // Ended: the other answers from the store, as a cancel request
        // of an ended workflow is answered.
        let a = call(addrs[1 - owner], "POST", &path, Some(ADMIN)).await;
        assert_eq!(a.status, 200, "{id}: {}", a.body);
        assert_eq!(a.json()["status"], "cancelled");
    }
    assert!(cancelled_by.iter().all(|n| *n > 0), "{cancelled_by:?}");
    for id in &ids {
        let status = env.client.status(id, DEADLINE).await.unwrap();
        assert_eq!(status.status, WorkflowStatus::Cancelled, "{id}");
    }
    for p in peers {
        p.stop().await;
    }
    env.finish().await;
}

//! The binaries as an operator runs them: `warren dev`, and
//! `warren-scheduler` + `warren-worker` driven by `warren
//! submit/status/cancel/pause/resume/schedule`,
//! configured through the environment and stopped with SIGTERM.

use crate::support::{
    DEADLINE, Proc, amqp_addr, binaries, drop_store_schema, store_env, test_store,
};
use serde_json::Value;
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};
use warren_shared::Topology;

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

#[test]
fn warren_dev_runs_the_example_and_cleans_up() {
    let out = Command::new(&binaries()["warren"])
        .args(["dev", "order.json"])
        .current_dir(examples())
        .env("AMQP_ADDR", amqp_addr())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(
        report["tasks"]["pay_order"]["attempts"], 2,
        "the example shows a retry"
    );
    assert_eq!(
        report["tasks"]["ship_order"]["output"]["note"],
        "ship ord-1042 to customer 123"
    );
    assert!(stderr.contains("workflow order-1042 succeeded"), "{stderr}");
    // Its throwaway namespace is gone afterwards.
    let ns = stderr
        .split("namespace ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("dev names its namespace");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = warren_shared::amqp::connect(&amqp_addr(), "check")
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let gone = ch
            .queue_declare(
                format!("{ns}.workflows").as_str().into(),
                passive,
                Default::default(),
            )
            .await;
        assert!(gone.is_err(), "{ns}.workflows still exists");
    });
}

/// Runs `warren ARGS` against `ns`, returning (exit code, stdout, stderr).
pub(crate) fn warren(ns: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(&binaries()["warren"])
        .args(args)
        .current_dir(examples())
        .env("AMQP_ADDR", amqp_addr())
        .env("WARREN_NAMESPACE", ns)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a binary on `ns` with its store and log (`{bin}.log`, or
/// `{WARREN_WORKER_ID}.log`) in `dir`, with `env` added.
fn start(bin: &str, addr: &str, ns: &str, dir: &Path, env: &[(&str, &str)]) -> Proc {
    let name = env
        .iter()
        .find(|(k, _)| *k == "WARREN_WORKER_ID")
        .map_or(bin, |(_, v)| v);
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Proc(
        Command::new(&binaries()[bin])
            .envs(env.iter().copied())
            .env("AMQP_ADDR", addr)
            .env("WARREN_NAMESPACE", ns)
            .env("WARREN_STORE", store_env(&test_store(&dir.join("w.db"))))
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

/// Deletes what a test's binaries declared on `ns`.
fn delete_namespace(ns: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = warren_shared::amqp::connect(&amqp_addr(), "cleanup")
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        Topology::new(ns.to_owned())
            .delete(&ch, &["default".to_owned()])
            .await
            .unwrap();
        warren_shared::amqp::close(&conn, "done").await;
        drop_store_schema(&test_store(Path::new("unused")), ns).await;
    });
}

#[test]
fn operator_commands_yaml_progress_status_cancel_graph_workers() {
    let ns = format!("wt-ops-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dir = tempfile::tempdir().unwrap();
    let mut scheduler = start("warren-scheduler", &amqp_addr(), &ns, dir.path(), &[]);
    let worker_env = [
        ("WARREN_LOG_FORMAT", "json"),
        ("WARREN_WORKER_ID", "steady"),
        ("WARREN_CONCURRENCY", "3"),
        ("WARREN_HEARTBEAT_MS", "200"),
        ("WARREN_SHELL_ALLOW", "echo,python3"),
    ];
    let mut worker = start("warren-worker", &amqp_addr(), &ns, dir.path(), &worker_env);
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };

    // YAML, watched: progress lines on stderr (not a terminal here).
    let steps = file(
        "steps.yaml",
        "id: steps\ntasks:\n  - {id: a, type: sleep, input: {ms: 700}}\n  - {id: b, type: sleep, depends_on: [a], input: {ms: 700}}\n  - {id: c, type: sleep, depends_on: [b], input: {ms: 700}}\n",
    );
    let (code, out, err) = warren(&ns, &["submit", "--wait", &steps]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert!(
        err.lines()
            .any(|l| l.starts_with('[') && l.contains("/3 done, ")),
        "a progress line: {err}"
    );

    // The worker binary enables `shell` from its allow-list: the ETL example.
    let mut etl: Value =
        serde_json::from_str(&std::fs::read_to_string(examples().join("etl.json")).unwrap())
            .unwrap();
    let target = dir.path().join("etl-out.json");
    etl["input"]["target"] = Value::from(target.to_str().unwrap());
    let etl = file("etl.json", &etl.to_string());
    let (code, _, err) = warren(&ns, &["submit", "--wait", &etl]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read_to_string(&target).unwrap().contains("Lima"));

    let (code, out, _) = warren(&ns, &["status", "steps"]);
    assert_eq!(code, 0);
    let header = out.lines().nth(1).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["TASK", "STATE", "ATTEMPTS", "DURATION", "WORKER"]
    );
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["a", "succeeded", "1"]);
    assert!(
        row[3].ends_with("ms") && row[3].trim_end_matches("ms").parse::<u32>().unwrap() >= 700,
        "{row:?}"
    );

    // Errors a user meets: where the file is wrong, every rejection on its
    // own line, an unreachable broker named without its password.
    let broken = file("broken.yaml", "tasks:\n  - {id: a, type: echo\n");
    let (code, _, err) = warren(&ns, &["submit", &broken]);
    assert_eq!(code, 2);
    assert!(
        err.contains("is not valid YAML") && err.contains("line 2"),
        "{err}"
    );
    let bad = file(
        "bad.json",
        r#"{"tasks": [{"id": "a", "type": "echo", "depends_on": ["a", "nope"]}]}"#,
    );
    let (code, _, err) = warren(&ns, &["submit", "--wait", &bad]);
    assert_eq!(code, 1);
    assert!(
        err.lines()
            .any(|l| l.trim_start().starts_with("self_dependency: ")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.trim_start().starts_with("unknown_dependency: ")),
        "{err}"
    );
    let out = Command::new(&binaries()["warren"])
        .args(["status", "x"])
        .env("AMQP_ADDR", "amqp://guest:hunter2@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("127.0.0.1:1") && !err.contains("hunter2"),
        "{err}"
    );

    // Cancel a running workflow; then draw it.
    let long = file(
        "long.json",
        r#"{"id": "long", "tasks": [{"id": "first", "type": "echo"},
            {"id": "slow", "type": "sleep", "depends_on": ["first"], "input": {"ms": 60000}},
            {"id": "last", "type": "echo", "depends_on": ["slow"]}]}"#,
    );
    let (code, _, err) = warren(&ns, &["submit", &long]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + DEADLINE;
    while !warren(&ns, &["status", "long"])
        .1
        .lines()
        .any(|l| l.starts_with("slow ") && l.contains(" running "))
    {
        assert!(Instant::now() < deadline, "slow never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, out, err) = warren(&ns, &["cancel", "long"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("workflow long: cancelled\n"), "{out}");
    let (code, _, err) = warren(&ns, &["cancel", "steps"]);
    assert_eq!(code, 1);
    assert!(err.contains("had already ended (succeeded)"), "{err}");

    let (code, out, _) = warren(&ns, &["graph", "--format", "mermaid", "long"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("flowchart LR\n"), "{out}");
    assert!(
        out.contains("[\"first<br/>succeeded\"]:::succeeded"),
        "{out}"
    );
    assert!(
        out.contains("[\"slow<br/>cancelled\"]:::cancelled"),
        "{out}"
    );
    assert_eq!(out.matches(" --> ").count(), 2, "{out}");
    let (code, out, _) = warren(&ns, &["graph", &steps]);
    assert_eq!(code, 0);
    assert!(out.starts_with("digraph \"steps\" {"), "{out}");
    assert!(
        out.contains("\"a\" -> \"b\";") && out.contains("\"b\" -> \"c\";"),
        "{out}"
    );
    assert!(out.contains("label=\"c\\npending\""), "{out}");

    // Pause and resume: each prints what is paused; a bad name is refused.
    let (code, out, err) = warren(&ns, &["pause", "--queue", "emails"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("paused queue emails since "), "{out}");
    let (code, out, err) = warren(&ns, &["pause", "--type", "payments.charge", "--json"]);
    assert_eq!(code, 0, "{err}");
    let paused: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(paused["queues"][0]["name"], "emails", "{out}");
    assert_eq!(paused["types"][0]["name"], "payments.charge", "{out}");
    let (code, _, err) = warren(&ns, &["pause", "--queue", "a", "--type", "b"]);
    assert_eq!(code, 2, "one of --queue and --type: {err}");
    let (code, _, err) = warren(&ns, &["pause", "--queue", "no spaces"]);
    assert_eq!(code, 2);
    assert!(err.contains("refused (invalid_control)"), "{err}");
    let (code, out, _) = warren(&ns, &["resume", "--queue", "emails"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("paused type payments.charge since "),
        "{out}"
    );
    let (code, out, _) = warren(&ns, &["resume", "--type", "payments.charge"]);
    assert_eq!((code, out.as_str()), (0, "nothing is paused\n"));

    // The worker registry: a worker killed outright is lost after three
    // missed heartbeats; one stopped with SIGTERM says it is stopping.
    let mut doomed = start(
        "warren-worker",
        &amqp_addr(),
        &ns,
        dir.path(),
        &[
            ("WARREN_WORKER_ID", "doomed"),
            ("WARREN_HEARTBEAT_MS", "200"),
        ],
    );
    let state_of = |id: &str| -> Option<String> {
        let (_, out, _) = warren(&ns, &["workers"]);
        out.lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
    };
    let wait_state = |id: &str, want: &str| {
        let deadline = Instant::now() + DEADLINE;
        while state_of(id).as_deref() != Some(want) {
            assert!(Instant::now() < deadline, "{id} never became {want}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_state("doomed", "running");
    let (code, out, _) = warren(&ns, &["workers", "--json"]);
    assert_eq!(code, 0);
    let registry: Value = serde_json::from_str(&out).unwrap();
    let steady = registry["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker_id"] == "steady")
        .expect("the steady worker is listed");
    assert_eq!(steady["queues"], serde_json::json!(["default"]));
    assert_eq!(steady["concurrency"], 3);
    assert!(
        steady["version"]
            .as_str()
            .unwrap()
            .starts_with("warren-worker ")
    );
    assert!(steady["last_seen"].is_string() && steady["host"].is_string());
    let pid = doomed.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    doomed.0.wait().unwrap();
    wait_state("doomed", "lost");

    assert!(terminate(&mut worker).success());
    wait_state("steady", "stopping");
    assert!(terminate(&mut scheduler).success());
    // The worker logged JSON lines, with the ids as fields.
    let logs = std::fs::read_to_string(dir.path().join("steady.log")).unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["workflow"] == "long" && l["task"] == "slow" && l["message"].is_string()),
        "{logs}"
    );
    delete_namespace(&ns);
}

/// Runs `warren ARGS` against `ns` with `input` on stdin.
fn warren_stdin(ns: &str, args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(&binaries()["warren"])
        .args(args)
        .env("AMQP_ADDR", amqp_addr())
        .env("WARREN_NAMESPACE", ns)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cells of `warren schedule list`'s row for `id` (split on runs of
/// two spaces or more: a cron expression holds single spaces).
fn schedule_row(ns: &str, id: &str) -> Option<Vec<String>> {
    let (code, out, err) = warren(ns, &["schedule", "list"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
}

#[test]
fn schedule_commands_add_list_trigger_pause_resume_rm() {
    let ns = format!(
        "wt-sched-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let dir = tempfile::tempdir().unwrap();
    let mut scheduler = start("warren-scheduler", &amqp_addr(), &ns, dir.path(), &[]);
    let mut worker = start("warren-worker", &amqp_addr(), &ns, dir.path(), &[]);
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };

    // An hourly schedule: it does not fire by itself within the test.
    let hourly = file(
        "hourly.json",
        r#"{"id": "hourly", "every_ms": 3600000, "workflow": {"tasks": [
            {"id": "a", "type": "echo", "input": {"at": "${schedule.fire_time}"}}]}}"#,
    );
    let (code, out, err) = warren(&ns, &["schedule", "add", &hourly]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("schedule hourly created; next firing at "),
        "{out}"
    );
    let (code, _, err) = warren(&ns, &["schedule", "add", &hourly]);
    assert_eq!(code, 1, "the id is taken: {err}");
    assert!(err.contains("schedule hourly rejected"), "{err}");

    let (code, out, _) = warren(&ns, &["schedule", "list"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines()
            .next()
            .unwrap()
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect::<Vec<_>>(),
        [
            "SCHEDULE",
            "TIMING",
            "TIMEZONE",
            "PAUSED",
            "NEXT FIRING",
            "LAST FIRING",
            "LAST OUTCOME",
            "FIRED/SKIPPED"
        ],
        "{out}"
    );
    let row = schedule_row(&ns, "hourly").expect("hourly is listed");
    assert_eq!(row[..4], ["hourly", "every 1h", "UTC", "no"], "{row:?}");
    assert!(row[4].ends_with('Z'), "next firing: {row:?}");
    assert_eq!(row[5..], ["-", "-", "0/0"], "{row:?}");

    // A trigger prints the workflow it submitted, which runs.
    let (code, out, err) = warren(&ns, &["schedule", "trigger", "hourly"]);
    assert_eq!(code, 0, "{out}{err}");
    let workflow = out.trim().to_owned();
    assert!(workflow.starts_with("hourly:"), "{out}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, out, _) = warren(&ns, &["status", &workflow, "--json"]);
        let report: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        if report["status"] == "succeeded" {
            // The firing's time, in its input and in its id.
            let time = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
            let at = report["tasks"]["a"]["output"]["at"].as_str().unwrap();
            assert_eq!(time(at), time(&workflow["hourly:".len()..]), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{workflow} never succeeded: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let row = schedule_row(&ns, "hourly").unwrap();
        if row[6] == format!("succeeded ({workflow})") {
            assert_eq!(row[7], "1/0", "{row:?}");
            assert!(row[5].ends_with('Z'), "last firing: {row:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the list never showed it: {row:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Pause, get, resume.
    let (code, out, err) = warren(&ns, &["schedule", "pause", "hourly"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "schedule hourly paused\n"),
        "{err}"
    );
    let row = schedule_row(&ns, "hourly").unwrap();
    assert_eq!(row[3..5], ["yes", "-"], "paused, no next firing: {row:?}");
    let (code, out, err) = warren(&ns, &["schedule", "get", "hourly"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["id"], "hourly");
    assert_eq!(shown["paused"], true);
    assert_eq!(shown["every_ms"], 3_600_000);
    assert_eq!(shown["last_workflow_id"], workflow.as_str());
    assert_eq!(shown["workflow"]["tasks"][0]["type"], "echo", "{out}");
    let (code, out, err) = warren(&ns, &["schedule", "resume", "hourly"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("schedule hourly resumed; next firing at "),
        "{out}"
    );
    assert_eq!(schedule_row(&ns, "hourly").unwrap()[3], "no");

    // From stdin, a cron schedule in a zone; a bad cron is refused with
    // its code.
    let (code, out, err) = warren_stdin(
        &ns,
        &["schedule", "add", "-"],
        r#"{"id": "weekdays", "cron": "0 9 * * MON-FRI", "timezone": "Europe/Paris",
            "workflow": {"tasks": [{"id": "a", "type": "echo"}]}}"#,
    );
    assert_eq!(code, 0, "{out}{err}");
    let row = schedule_row(&ns, "weekdays").expect("weekdays is listed");
    assert_eq!(
        row[..4],
        ["weekdays", "cron 0 9 * * MON-FRI", "Europe/Paris", "no"],
        "{row:?}"
    );
    let bad = file(
        "bad.json",
        r#"{"id": "bad", "cron": "61 * * * *", "workflow": {"tasks": [{"id": "a", "type": "echo"}]}}"#,
    );
    let (code, _, err) = warren(&ns, &["schedule", "add", &bad]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.lines()
            .any(|l| l.trim_start().starts_with("invalid_cron: ")),
        "{err}"
    );
    assert!(schedule_row(&ns, "bad").is_none());
    // A file that is no schedule never reaches the scheduler.
    let (code, _, err) = warren_stdin(&ns, &["schedule", "add", "-"], r#"{"id": "x", "every": 5}"#);
    assert_eq!(code, 2);
    assert!(err.contains("stdin is not a valid schedule"), "{err}");

    // Delete; then it is unknown to every command.
    let (code, out, err) = warren(&ns, &["schedule", "rm", "hourly"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "schedule hourly deleted\n"),
        "{err}"
    );
    assert!(schedule_row(&ns, "hourly").is_none());
    for cmd in ["get", "trigger", "pause", "rm"] {
        let (code, out, err) = warren(&ns, &["schedule", cmd, "hourly"]);
        assert_eq!(code, 1, "{cmd}: {out}{err}");
        assert_eq!(err, "no schedule hourly\n", "{cmd}");
    }
    let (code, _, _) = warren(&ns, &["schedule", "rm", "weekdays"]);
    assert_eq!(code, 0);
    let (code, out, _) = warren(&ns, &["schedule", "list"]);
    assert_eq!((code, out.as_str()), (0, "no schedules\n"));

    assert!(terminate(&mut worker).success());
    assert!(terminate(&mut scheduler).success());
    delete_namespace(&ns);
}

fn terminate(p: &mut Proc) -> std::process::ExitStatus {
    let pid = p.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process {pid} ignored SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn binaries_submit_wait_status_and_stop_on_sigterm() {
    let ns = format!("wt-cli-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dir = tempfile::tempdir().unwrap();
    // The password must never reach a log line.
    let addr = amqp_addr().replacen("amqp://", "amqp://guest:guest@", 1);
    let addr = if amqp_addr().contains('@') {
        amqp_addr()
    } else {
        addr
    };
    let log_path = |bin: &str| dir.path().join(format!("{bin}.log"));
    let mut scheduler = start("warren-scheduler", &addr, &ns, dir.path(), &[]);
    let mut worker = start("warren-worker", &addr, &ns, dir.path(), &[]);

    let (code, out, err) = warren(&ns, &["submit", "order.json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "order-1042");
    let (code, out, err) = warren(&ns, &["submit", "--wait", "order.json"]);
    assert_eq!(
        code, 0,
        "a duplicate submission waits for the same outcome: {err}"
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["status"], "succeeded");

    let (code, out, _) = warren(&ns, &["status", "order-1042"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("workflow order-1042: succeeded\n"), "{out}");
    assert!(
        out.lines().any(|l| l
            .split_whitespace()
            .take(3)
            .eq(["pay_order", "succeeded", "2"])),
        "{out}"
    );
    let (code, out, _) = warren(&ns, &["status", "no-such-workflow"]);
    assert_eq!(code, 1);
    assert!(out.contains("not_found"), "{out}");

    let failing = dir.path().join("failing.json");
    std::fs::write(
        &failing,
        r#"{"tasks": [{"id": "boom", "type": "fail", "input": {"message": "on purpose"}}]}"#,
    )
    .unwrap();
    let (code, out, err) = warren(&ns, &["submit", "--wait", failing.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("task `boom` failed after 1 attempt: on purpose"),
        "{err}"
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"tasks\": [}").unwrap();
    let (code, _, err) = warren(&ns, &["submit", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("is not valid JSON") && err.contains("line 1 column 12"),
        "{err}"
    );

    assert!(
        terminate(&mut worker).success(),
        "worker exits cleanly on SIGTERM"
    );
    assert!(
        terminate(&mut scheduler).success(),
        "scheduler exits cleanly on SIGTERM"
    );
    for bin in ["warren-scheduler", "warren-worker"] {
        let logs = std::fs::read_to_string(log_path(bin)).unwrap();
        assert!(!logs.contains("guest:guest"), "password in logs:\n{logs}");
        assert!(logs.contains("stopped"), "{logs}");
        assert!(
            logs.contains("guest:***"),
            "the address is logged, redacted:\n{logs}"
        );
    }

    delete_namespace(&ns);
}

use super::*;
use std::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);

fn shell_of(commands: &[&str], env_allow: &[&str]) -> Shell {
    let mut config = ShellConfig::new(commands.iter().map(|c| (*c).to_owned()).collect());
    config.env_allow = env_allow.iter().map(|c| (*c).to_owned()).collect();
    Shell::new(config).unwrap()
}

/// A value no other process carries: marks the processes of one test.
fn marker(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// Live processes (not zombies) whose environment holds `MARK=marker`.
fn marked(marker: &str) -> Vec<u32> {
    let needle = format!("MARK={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            env.split(|b| *b == 0).any(|v| v == needle.as_bytes())
                && !matches!(state, None | Some('Z' | 'X'))
        })
        .collect()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn shell_runs_only_allowed_commands_without_a_shell() {
    let shell = shell_of(&["echo"], &[]);
    let out = shell
        .run(json!({"command": "echo", "args": ["a b", "$HOME;", "c"]}))
        .await
        .unwrap();
    // Arguments reach the command as they are: no word splitting, no
    // expansion, no command separators.
    assert_eq!(out["stdout"], "a b $HOME; c\n");
    assert_eq!(out["exit_code"], 0);
    let err = shell
        .run(json!({"command": "sh", "args": ["-c", "id"]}))
        .await
        .unwrap_err();
    assert!(
        !err.retryable
            && err
                .message
                .contains("not in this worker's shell allow-list")
    );
    // The resolved path is not a second name for the command.
    let path = shell
        .commands()
        .next()
        .unwrap()
        .1
        .to_str()
        .unwrap()
        .to_owned();
    let err = shell.run(json!({"command": path})).await.unwrap_err();
    assert!(
        err.message
            .contains("not in this worker's shell allow-list")
    );
    let err = shell
        .run(json!({"command": "echo", "shell": true}))
        .await
        .unwrap_err();
    assert!(err.message.contains("unknown field `shell`"), "{err}");
}

#[tokio::test]
async fn a_task_sets_only_allow_listed_variables_and_never_path() {
    let shell = shell_of(&["env"], &["APP_*", "TZ"]);
    // The command sees the worker's PATH and HOME and the allowed
    // variables, nothing else of the worker.
    let out = shell
        .run(json!({"command": "env", "env": {"APP_MODE": "x", "TZ": "UTC"}}))
        .await
        .unwrap();
    let mut names: Vec<&str> = out["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    names.sort_unstable();
    let mut expected = vec!["APP_MODE", "TZ"];
    expected.extend(
        ["HOME", "PATH"]
            .iter()
            .filter(|k| std::env::var_os(k).is_some()),
    );
    expected.sort_unstable();
    assert_eq!(names, expected);

    for (env, says) in [
        (
            json!({"PATH": "/tmp"}),
            "`env` may not set `PATH`: no task may set",
        ),
        (
            json!({"LD_PRELOAD": "/tmp/x.so", "APP_A": "1"}),
            "`LD_PRELOAD`",
        ),
        (json!({"PYTHONPATH": "/tmp"}), "`PYTHONPATH`"),
        (json!({"path": "/tmp"}), "`path`"),
        (
            json!({"OTHER": "1", "TZDATA": "2"}),
            "`env` may not set `OTHER`, `TZDATA`: not in this worker's shell env allow-list (TZ, APP_*)",
        ),
    ] {
        let err = shell
            .run(json!({"command": "env", "env": env}))
            .await
            .unwrap_err();
        assert!(!err.retryable && err.message.contains(says), "{err}");
    }
}

#[tokio::test]
async fn stdin_is_written_while_the_output_is_read_and_capped() {
    // Four times the cap through `cat`: writing it all before reading
    // would block on the full pipes (64 KiB) for ever.
    let mut config = ShellConfig::new(vec!["cat".into(), "sh".into()]);
    config.max_output_bytes = 1 << 20;
    let shell = Shell::new(config).unwrap();
    let text: String = (0..4 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let out = tokio::time::timeout(
        DEADLINE,
        shell.run(json!({"command": "cat", "stdin": text})),
    )
    .await
    .expect("no deadlock")
    .unwrap();
    assert_eq!(out["stdout"].as_str().unwrap(), &text[..1 << 20]);
    assert_eq!(out["stdout_truncated"], true);
    assert!(out.get("stderr_truncated").is_none());

    // stderr likewise, read beside stdout.
    let out = shell
        .run(json!({"command": "sh", "args": ["-c",
            "head -c 3000000 /dev/zero | tr '\\0' e >&2; echo done"]}))
        .await
        .unwrap();
    assert_eq!(out["stdout"], "done\n");
    assert_eq!(out["stderr"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(out["stderr_truncated"], true);
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let shell = shell_of(&["sh"], &["MARK"]);
    let mark = marker("timeout");
    let err = shell
        .run(
            json!({"command": "sh", "args": ["-c", "sleep 1000 & sleep 1000"],
            "env": {"MARK": mark}, "timeout_ms": 300}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.message, "`sh` ran over 300 ms");
    wait_until("no process of the task left", || marked(&mark).is_empty()).await;
}

#[tokio::test]
async fn a_dropped_task_kills_the_whole_process_group() {
    let shell = shell_of(&["sh"], &["MARK"]);
    let mark = marker("dropped");
    let run = shell.run(
        json!({"command": "sh", "args": ["-c", "sleep 1000 & sleep 1000"],
        "env": {"MARK": mark}}),
    );
    let mut run = Box::pin(run);
    // Polled until both sleeps (and the shell) run, then dropped as a
    // cancelled or timed-out task is.
    tokio::select! {
        _ = &mut run => panic!("it runs until dropped"),
        () = wait_until("both sleeps", || marked(&mark).len() >= 2) => {}
    }
    drop(run);
    wait_until("no process of the task left", || marked(&mark).is_empty()).await;
}

#[tokio::test]
async fn background_children_do_not_outlive_the_command() {
    let shell = shell_of(&["sh"], &["MARK"]);
    let mark = marker("background");
    // The background sleep holds stdout open: without the group kill this
    // would wait for it.
    let out = tokio::time::timeout(
        DEADLINE,
        shell.run(
            json!({"command": "sh", "args": ["-c", "sleep 1000 & echo started"],
            "env": {"MARK": mark}}),
        ),
    )
    .await
    .expect("done when the command exits")
    .unwrap();
    assert_eq!(out["stdout"], "started\n");
    wait_until("no process of the task left", || marked(&mark).is_empty()).await;
}

#[tokio::test]
async fn a_failing_command_fails_the_attempt_with_its_stderr() {
    let shell = shell_of(&["sh"], &[]);
    let err = shell
        .run(json!({"command": "sh", "args": ["-c", "echo bad row >&2; exit 3"]}))
        .await
        .unwrap_err();
    assert!(err.retryable);
    assert_eq!(err.message, "`sh` exited with code 3: bad row");
    let err = shell
        .run(json!({"command": "sh", "args": ["-c", "kill -9 $$"]}))
        .await
        .unwrap_err();
    assert_eq!(err.message, "`sh` was killed by signal 9");
}

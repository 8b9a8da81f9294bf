//! `warren schedule ...`: create, list, show, pause, resume, trigger and
//! delete schedules through the `schedule.*` control requests.
//!
//! Exit codes follow the rest of the CLI: 0 when the request did what it
//! asked, 1 when the scheduler answered no (`rejected`, with each reason
//! on its own line on stderr; `not_found`; a trigger `skipped`), 2 on any
//! other error (broker, file, a request the scheduler refused as invalid).

use crate::print::{self, safe};
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use std::{io::Read, path::PathBuf, process::ExitCode, time::Duration};
use warren_producer::Client;
use warren_shared::AmqpConfig;
use warren_shared::wire::{ControlKind, ScheduleInfo, ScheduleReport, ScheduleSpec};

/// Schedules per `schedule.list` page asked for (the scheduler's most).
const PAGE: u32 = 1_000;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Create a schedule from a JSON file (`-` for stdin): {"id", "cron" or
    /// "every_ms", "timezone", "overlap", "catch_up", "workflow"}.
    Add {
        file: PathBuf,
        #[command(flatten)]
        wait: Wait,
    },
    /// A table of every schedule: id, timing, zone, paused, next and last
    /// firing, the last firing's outcome, firings fired and skipped.
    List {
        /// Print the schedules as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Print a schedule, with the workflow it submits, as JSON.
    Get {
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Hold a schedule's firings until `resume`.
    Pause {
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Let a paused schedule fire again, from its next firing after now.
    Resume {
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Fire a schedule now, once, and print the id of the workflow it
    /// submitted. Exits 1 when the firing was skipped (`overlap: skip`
    /// and its last workflow still running).
    Trigger {
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Delete a schedule (the workflows it started run on).
    Rm {
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
}

/// How long to wait for the scheduler's answer.
#[derive(clap::Args, Debug)]
pub struct Wait {
    /// Seconds to wait for the scheduler's answer.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

impl Wait {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

/// Runs one `warren schedule` command.
pub async fn run(amqp: &AmqpConfig, command: ScheduleCommand) -> anyhow::Result<ExitCode> {
    // Read the file before connecting: a bad file needs no broker.
    let spec = match &command {
        ScheduleCommand::Add { file, .. } => Some(read(file)?),
        _ => None,
    };
    let client = Client::connect(amqp).await?;
    let done = ask(&client, command, spec).await;
    client.close().await;
    done
}

async fn ask(
    client: &Client,
    command: ScheduleCommand,
    spec: Option<ScheduleSpec>,
) -> anyhow::Result<ExitCode> {
    let (kind, id, wait) = match command {
        ScheduleCommand::Add { wait, .. } => {
            let spec = spec.expect("read for `add`");
            let report = client.schedule_create(spec, wait.duration()).await?;
            return Ok(match refusal(&report) {
                Some(code) => code,
                None => {
                    println!(
                        "schedule {} created{}",
                        safe(&report.schedule_id),
                        next(&report)
                    );
                    ExitCode::SUCCESS
                }
            });
        }
        ScheduleCommand::List { json, wait } => return list(client, json, wait.duration()).await,
        ScheduleCommand::Get { id, wait } => (ControlKind::ScheduleGet, id, wait),
        ScheduleCommand::Pause { id, wait } => (ControlKind::SchedulePause, id, wait),
        ScheduleCommand::Resume { id, wait } => (ControlKind::ScheduleResume, id, wait),
        ScheduleCommand::Trigger { id, wait } => (ControlKind::ScheduleTrigger, id, wait),
        ScheduleCommand::Rm { id, wait } => (ControlKind::ScheduleDelete, id, wait),
    };
    let report = client.schedule(kind, &id, wait.duration()).await?;
    if let Some(code) = refusal(&report) {
        return Ok(code);
    }
    let id = safe(&report.schedule_id);
    match kind {
        ControlKind::ScheduleGet => {
            let shown = report
                .schedule
                .as_ref()
                .context("the answer holds no schedule")?;
            println!("{}", serde_json::to_string_pretty(shown)?);
        }
        ControlKind::ScheduleTrigger => match (report.outcome.as_str(), &report.workflow_id) {
            ("triggered", Some(workflow)) => println!("{}", safe(workflow)),
            ("skipped", _) => {
                let last = report
                    .schedule
                    .as_ref()
                    .and_then(|s| s.last_workflow_id.as_deref())
                    .map(|w| format!(": its last workflow {} has not ended", safe(w)))
                    .unwrap_or_default();
                eprintln!("schedule {id} skipped the firing (overlap: skip){last}");
                return Ok(ExitCode::from(1));
            }
            (other, _) => anyhow::bail!("unexpected answer to a trigger: {}", safe(other)),
        },
        ControlKind::ScheduleResume => println!("schedule {id} resumed{}", next(&report)),
        _ => println!("schedule {id} {}", safe(&report.outcome)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code 1 for an answer that says no (`rejected`, `not_found`),
/// with why on stderr; `None` for any other.
fn refusal(report: &ScheduleReport) -> Option<ExitCode> {
    let id = safe(&report.schedule_id);
    match report.outcome.as_str() {
        "not_found" => eprintln!("no schedule {id}"),
        "rejected" => {
            eprintln!("schedule {id} rejected");
            for e in &report.errors {
                eprintln!("  {}: {}", safe(&e.code), safe(&e.message));
            }
        }
        _ => return None,
    }
    Some(ExitCode::from(1))
}

/// `; next firing at T` when the answer's schedule has one.
fn next(report: &ScheduleReport) -> String {
    report
        .schedule
        .as_ref()
        .and_then(|s| s.next_fire_at)
        .map(|t| format!("; next firing at {}", time(t)))
        .unwrap_or_default()
}

/// Every page of `schedule.list`, as a table or as JSON.
async fn list(client: &Client, json: bool, timeout: Duration) -> anyhow::Result<ExitCode> {
    let mut all: Vec<ScheduleInfo> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .schedule_list(after.as_deref(), Some(PAGE), timeout)
            .await?;
        all.extend(page.schedules);
        match page.next_after {
            // Ids come in order: one that does not move on ends the walk
            // rather than asking for the same page forever.
            Some(next) if after.as_ref().is_none_or(|a| next > *a) => after = Some(next),
            _ => break,
        }
    }
    if json {
        let out = serde_json::json!({ "schedules": all });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        table(&all);
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per schedule.
fn table(schedules: &[ScheduleInfo]) {
    if schedules.is_empty() {
        println!("no schedules");
        return;
    }
    let rows: Vec<[String; 8]> = schedules
        .iter()
        .map(|s| {
            let last = match (&s.last_outcome, &s.last_workflow_id) {
                (Some(o), Some(w)) if o != "skipped" => format!("{o} ({w})"),
                (Some(o), _) => o.clone(),
                // Its status is not known where the answer was made.
                (None, Some(w)) => format!("? ({w})"),
                (None, None) => "-".into(),
            };
            [
                safe(&s.id).into_owned(),
                safe(&timing(s)).into_owned(),
                safe(&s.timezone).into_owned(),
                if s.paused { "yes" } else { "no" }.into(),
                s.next_fire_at.map_or_else(|| "-".into(), time),
                s.last_fire_at.map_or_else(|| "-".into(), time),
                safe(&last).into_owned(),
                format!("{}/{}", s.fired, s.skipped),
            ]
        })
        .collect();
    print::columns(
        &[
            "SCHEDULE",
            "TIMING",
            "TIMEZONE",
            "PAUSED",
            "NEXT FIRING",
            "LAST FIRING",
            "LAST OUTCOME",
            "FIRED/SKIPPED",
        ],
        &rows,
    );
}

/// `cron 0 9 * * MON-FRI` or `every 90s`.
fn timing(s: &ScheduleInfo) -> String {
    match (&s.cron, s.every_ms) {
        (Some(cron), _) => format!("cron {cron}"),
        (None, Some(ms)) => format!("every {}", every(ms)),
        (None, None) => "-".into(),
    }
}

/// An interval in the largest unit that divides it: `1500ms`, `90s`,
/// `10m`, `2h`, `1d` (as `submit --in` reads them).
fn every(ms: u64) -> String {
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Reads a schedule: JSON, from a file or (`-`) stdin.
fn read(file: &std::path::Path) -> anyhow::Result<ScheduleSpec> {
    let (text, name) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        (text, "stdin".to_owned())
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        (text, file.display().to_string())
    };
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{name} is not a valid schedule (JSON: \"id\", \"cron\" or \"every_ms\", \
             \"timezone\", \"overlap\", \"catch_up\", \"workflow\")"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::every;

    #[test]
    fn intervals_are_shown_in_their_largest_exact_unit() {
        for (ms, shown) in [
            (1, "1ms"),
            (1_500, "1500ms"),
            (90_000, "90s"),
            (600_000, "10m"),
            (5_400_000, "90m"),
            (7_200_000, "2h"),
            (86_400_000, "1d"),
        ] {
            assert_eq!(every(ms), shown, "{ms}");
        }
    }
}

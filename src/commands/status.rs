//! `cargo portguard status`: what runs, where, since when, and how healthy. It only reads: it
//! takes no exclusive lock, signals nothing, builds nothing and runs no `cargo metadata`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::cli::{CommonArgs, StatusArgs};
use crate::context::Context;
use crate::exit_codes;
use crate::instance::Scope;
use crate::instance::summary::{Running, State, Summary};
use crate::output;
use crate::supervise::build::BuildState;

/// `cargo portguard status`.
///
/// # Errors
/// An invalid instance name (exit 2), a lock that cannot be tested.
pub(crate) fn status(context: &Context, common: &CommonArgs, args: &StatusArgs) -> Result<i32> {
    let scope = Scope::find(
        context,
        common.manifest_path.as_deref(),
        common.package.as_deref(),
    );
    let mut summaries = Vec::new();
    match &args.instance {
        Some(name) => {
            let summary = match scope.named(name)? {
                Some(files) => files.summary(true)?,
                None => Summary {
                    instance: name.clone(),
                    state: State::Stopped,
                    running: None,
                    dead_supervisor: None,
                },
            };
            summaries.push(summary);
        }
        None => {
            for selected in scope.instances() {
                let summary = selected.files.summary_of(selected.record, true)?;
                // An old lock file alone is not state: list what runs and what a crash left.
                if summary.state != State::Stopped {
                    summaries.push(summary);
                }
            }
        }
    }
    let text = if args.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "instances": summaries }))
            .context("could not encode the status")?;
        format!("{text}\n")
    } else if summaries.is_empty() {
        format!("no instance{} is running here\n", scope.describe())
    } else {
        summaries.iter().map(describe).collect()
    };
    output::answer(&text)?;
    let any_running = summaries
        .iter()
        .any(|summary| summary.state == State::Running);
    Ok(if any_running {
        exit_codes::OK
    } else {
        exit_codes::NOT_RUNNING
    })
}

/// What reloads and restarts did: how many took over, and how the last build went.
fn builds(run: &Running) -> String {
    let mut text = String::new();
    if run.generation > 0 {
        let _ = writeln!(
            text,
            "  reloaded {} time{}, last at {}",
            run.generation,
            if run.generation == 1 { "" } else { "s" },
            run.reloaded_at.as_deref().unwrap_or("?")
        );
    }
    if let Some(build) = &run.build {
        let state = match build.state {
            BuildState::Building => "building",
            BuildState::Serving => "serving",
            BuildState::Failed => "FAILED",
            BuildState::ServerFailed => "built, but its server FAILED",
        };
        let cause = if build.cause == "restart" {
            "for a restart".to_owned()
        } else {
            format!("after {}", output::inert(&build.cause))
        };
        let _ = writeln!(
            text,
            "  last build: {state} ({cause}, {}){}",
            humantime::format_rfc3339_seconds(build.at),
            build
                .error
                .as_ref()
                .map(|error| format!(": {}", output::inert(error)))
                .unwrap_or_default()
        );
    }
    text
}

/// The Node.js write-up's answer, a few lines an instance.
fn describe(summary: &Summary) -> String {
    let name = &summary.instance;
    match (&summary.state, &summary.running) {
        (State::Running, Some(run)) => format!(
            "{name}: RUNNING{}\n  pid {} (supervisor {}), port {}, {} handoff{}\n{}  {}, up {}, health: {}\n{}",
            run.diagnosis
                .as_ref()
                .map(|diagnosis| format!(", NOT SERVING ITS PORT: {diagnosis}"))
                .unwrap_or_default(),
            run.pid,
            run.supervisor_pid,
            run.port,
            run.handoff,
            run.environment
                .as_ref()
                .map(|env| format!(", environment `{}`", output::inert(env)))
                .unwrap_or_default(),
            run.replicas
                .as_ref()
                .map(|pids| format!("  replicas: {}\n", crate::supervise::pid_list(pids)))
                .unwrap_or_default(),
            output::inert(&run.url),
            humantime::format_duration(Duration::from_secs(run.uptime_secs)),
            serde_json::to_value(run.health)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            builds(run)
        ),
        (State::Running, None) => format!("{name}: RUNNING (starting)\n"),
        (State::Stale, _) => {
            let who = summary.dead_supervisor.map_or_else(
                || "its supervisor".to_owned(),
                |pid| format!("its supervisor (pid {pid})"),
            );
            format!(
                "{name}: not running, stale: {who} died without cleaning up; the next start or `cargo portguard stop` clears it\n"
            )
        }
        (State::Stopped, _) => format!("{name}: not running\n"),
    }
}

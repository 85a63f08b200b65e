//! `cargo portguard status`: what runs, where, since when, and how healthy. It builds nothing,
//! starts nothing and runs no `cargo metadata`: the nearest `.portguard/` folder says it all.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::cli::{CommonArgs, StatusArgs};
use crate::exit_codes::{self, BadInput};
use crate::health;
use crate::lock::{self, Acquired, InstanceFiles, Record, StateDir};
use crate::serve::Vars;

/// One instance as `status --json` shows it.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub instance: String,
    pub state: State,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub running: Option<Running>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Stopped,
    /// A supervisor died without cleaning up; its files have just been removed.
    Stale,
}

/// What is known of a running instance.
#[derive(Debug, Serialize)]
pub struct Running {
    pub pid: u32,
    pub supervisor_pid: u32,
    pub port: u16,
    pub host: String,
    pub url: String,
    pub handoff: String,
    pub started_at: String,
    pub uptime_secs: u64,
    pub health: Health,
    /// The `env.<NAME>` table it runs with; absent for the default environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// With `--replicas N` (N > 1): every replica's pid; absent for a single server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    /// No `health-path` is configured, or the server is still starting.
    Unknown,
}

impl Entry {
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.running.as_ref().map(|running| running.port)
    }
}

/// The state of one instance. Stale files are cleaned up on the way; with `probe`, a running
/// server's health path is asked (within its `check-timeout-ms`).
///
/// # Errors
/// When the state files cannot be read or the lock tested.
pub fn entry(files: &InstanceFiles, probe: bool) -> Result<Entry> {
    let instance = files.name.clone();
    if lock::is_held(files)? {
        // A supervisor that is still starting has no record yet: running, details to follow.
        let running = lock::read_record(files)
            .ok()
            .map(|record| running(&record, probe));
        return Ok(Entry {
            instance,
            state: State::Running,
            running,
        });
    }
    let state = match lock::acquire(files)? {
        Acquired::Ours(_, Some(stale)) => {
            crate::stop::end_orphan(&instance, &stale);
            State::Stale
        }
        Acquired::Ours(_, None) => State::Stopped,
        // It started between the two looks.
        Acquired::Running(record) => {
            let running = record.map(|record| running(&record, probe));
            return Ok(Entry {
                instance,
                state: State::Running,
                running,
            });
        }
    };
    Ok(Entry {
        instance,
        state,
        running: None,
    })
}

fn running(record: &Record, probe: bool) -> Running {
    let uptime = humantime::parse_rfc3339(&record.started_at)
        .ok()
        .and_then(|started| SystemTime::now().duration_since(started).ok())
        .unwrap_or_default();
    let health = match (&record.health_path, probe && record.ready) {
        (Some(path), true) => {
            let addr = health_addr(record);
            let timeout = Duration::from_millis(record.check_timeout_ms.max(1));
            match addr.map(|addr| health::http_status(addr, path, Some(timeout))) {
                Some(Ok(status)) if health::is_success(status) => Health::Healthy,
                _ => Health::Unhealthy,
            }
        }
        _ => Health::Unknown,
    };
    Running {
        pid: record.pid,
        supervisor_pid: record.supervisor_pid,
        port: record.port,
        host: record.host.clone(),
        url: record.url.clone(),
        handoff: record.handoff.clone(),
        started_at: record.started_at.clone(),
        uptime_secs: uptime.as_secs(),
        health,
        environment: record.environment.clone(),
        replicas: (!record.replicas.is_empty()).then(|| record.replicas.clone()),
    }
}

fn health_addr(record: &Record) -> Option<std::net::SocketAddr> {
    let host = record.host.parse().ok()?;
    Some(health::client_addr(host, record.port))
}

/// The state folder for an operating command: `PORTGUARD_STATE_DIR`, else the nearest
/// `.portguard/` at or above the manifest's folder or the current directory.
#[must_use]
pub fn find_state(common: &CommonArgs, vars: Vars<'_>) -> Option<StateDir> {
    let start = match &common.manifest_path {
        Some(manifest) => manifest.parent().map(PathBuf::from).unwrap_or_default(),
        None => std::env::current_dir().unwrap_or_default(),
    };
    let start = std::path::absolute(&start).unwrap_or(start);
    StateDir::find(&start, vars("PORTGUARD_STATE_DIR").map(PathBuf::from))
}

/// `cargo portguard status`.
///
/// # Errors
/// An invalid instance name (exit 2), unreadable state.
pub fn status(common: &CommonArgs, args: &StatusArgs, vars: Vars<'_>) -> Result<i32> {
    let state = find_state(common, vars);
    let names = match (&args.instance, &state) {
        (Some(name), _) => {
            lock::validate_instance(name)?;
            vec![name.clone()]
        }
        (None, Some(state)) => state.instances(),
        (None, None) => Vec::new(),
    };
    let mut entries = Vec::new();
    for name in names {
        let entry = match &state {
            Some(state) => entry(&state.instance(&name), true)?,
            None => Entry {
                instance: name,
                state: State::Stopped,
                running: None,
            },
        };
        // An old lock file alone is not state: list what runs, what was just cleaned up, and
        // what was asked about.
        if args.instance.is_some() || entry.state != State::Stopped {
            entries.push(entry);
        }
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "instances": entries }))
            .context("could not encode the status")?;
        writeln!(stdout, "{text}").context("could not write to stdout")?;
    } else if entries.is_empty() {
        writeln!(stdout, "no instance is running here").context("could not write to stdout")?;
    } else {
        for entry in &entries {
            write!(stdout, "{}", describe(entry)).context("could not write to stdout")?;
        }
    }
    let any_running = entries.iter().any(|entry| entry.state == State::Running);
    Ok(if any_running {
        exit_codes::OK
    } else {
        exit_codes::NOT_RUNNING
    })
}

/// The seed's answer, a few lines an instance.
fn describe(entry: &Entry) -> String {
    let name = &entry.instance;
    match (&entry.state, &entry.running) {
        (State::Running, Some(run)) => format!(
            "{name}: RUNNING\n  pid {} (supervisor {}), port {}, {} handoff{}\n{}  {}, up {}, health: {}\n",
            run.pid,
            run.supervisor_pid,
            run.port,
            run.handoff,
            run.environment
                .as_ref()
                .map(|env| format!(", environment `{env}`"))
                .unwrap_or_default(),
            run.replicas
                .as_ref()
                .map(|pids| format!(
                    "  replicas: {}\n",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .unwrap_or_default(),
            run.url,
            humantime::format_duration(Duration::from_secs(run.uptime_secs)),
            serde_json::to_value(run.health)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
        (State::Running, None) => format!("{name}: RUNNING (starting)\n"),
        (State::Stale, _) => {
            format!("{name}: not running (removed the stale state of a supervisor that died)\n")
        }
        (State::Stopped, _) => format!("{name}: not running\n"),
    }
}

/// The one instance an operating command acts on when none is named: the only one running.
///
/// # Errors
/// A bad name (exit 2), or several running and none named (exit 2).
pub fn pick_running(
    state: Option<&StateDir>,
    named: Option<&str>,
) -> Result<Option<InstanceFiles>> {
    if let Some(name) = named {
        lock::validate_instance(name)?;
        return Ok(state.map(|state| state.instance(name)));
    }
    let Some(state) = state else { return Ok(None) };
    let running = running_instances(state)?;
    match running.as_slice() {
        [] => Ok(None),
        [only] => Ok(Some(state.instance(only))),
        several => Err(BadInput(format!(
            "several instances are running ({}): name one with `--instance NAME`",
            several.join(", ")
        ))
        .into()),
    }
}

/// The instances of `state` whose supervisor holds the lock.
///
/// # Errors
/// When a lock cannot be tested.
pub fn running_instances(state: &StateDir) -> Result<Vec<String>> {
    let mut running = Vec::new();
    for name in state.instances() {
        if lock::is_held(&state.instance(&name))? {
            running.push(name);
        }
    }
    Ok(running)
}

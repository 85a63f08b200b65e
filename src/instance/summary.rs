//! What `status` (and `serve-safe --detach --json`) says of an instance, read without taking the
//! lock and without signalling anything: running (the lock is held), stale (files a crashed run
//! left, which the next start or `stop` cleans up), or stopped.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::{InstanceFiles, LockState, Record};
use crate::config::Handoff;
use crate::health;
use crate::supervise::build::BuildReport;
use crate::supervise::diagnose;

/// One instance as `status --json` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) instance: String,
    pub(crate) state: State,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(crate) running: Option<Running>,
    /// For a stale instance, the supervisor that died, when its record says.
    #[serde(skip)]
    pub(crate) dead_supervisor: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    Running,
    Stopped,
    /// A supervisor died without cleaning up; its files are still there.
    Stale,
}

/// What is known of a running instance.
#[derive(Debug, Serialize)]
pub(crate) struct Running {
    pub(crate) pid: u32,
    pub(crate) supervisor_pid: u32,
    pub(crate) port: u16,
    pub(crate) host: String,
    pub(crate) url: String,
    pub(crate) handoff: Handoff,
    pub(crate) started_at: String,
    pub(crate) uptime_secs: u64,
    pub(crate) health: Health,
    /// The `env.<NAME>` table it runs with; absent for the default environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) environment: Option<String>,
    /// With `--replicas N` (N > 1): every replica's pid; absent for a single server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) replicas: Option<Vec<u32>>,
    /// Why nothing answers on the port though the server runs: it listens elsewhere. Looked
    /// for only while the server has not answered; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) diagnosis: Option<String>,
    /// How many times a new build has taken over (`--watch`, `restart`); absent before the
    /// first, so that the entry of a run without reloads is the contract's as it was.
    #[serde(skip_serializing_if = "super::record::is_zero")]
    pub(crate) generation: u32,
    /// When the last of those took over, RFC 3339 with milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reloaded_at: Option<String>,
    /// The last build of this run: `number`, `state` (`building`, `serving`, `failed`,
    /// `server-failed`), `at`, `cause` and, when it failed, `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) build: Option<BuildReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Health {
    Healthy,
    Unhealthy,
    /// No `health-path` is configured, or the server is still starting.
    Unknown,
}

impl Summary {
    pub(crate) fn port(&self) -> Option<u16> {
        self.running.as_ref().map(|running| running.port)
    }
}

impl InstanceFiles {
    /// The state of this instance; with `probe`, a running server's health path is asked
    /// (within its `check-timeout-ms`).
    ///
    /// # Errors
    /// When the lock cannot be tested.
    pub(crate) fn summary(&self, probe: bool) -> Result<Summary> {
        self.summary_of(self.read_record().ok(), probe)
    }

    /// [`Self::summary`] with the record already read (by a lookup that needed it first).
    ///
    /// # Errors
    /// When the lock cannot be tested.
    pub(crate) fn summary_of(&self, record: Option<Record>, probe: bool) -> Result<Summary> {
        let instance = self.name.to_string();
        let state = self.lock_state()?;
        let dead_supervisor = record.as_ref().map(|record| record.supervisor_pid);
        let (state, running) = match state {
            // A supervisor that is still starting has no record yet, or still has the one a
            // crashed run left while it cleans up: running, details to follow.
            LockState::Held => (
                State::Running,
                record
                    .filter(Record::supervisor_lives)
                    .map(|record| running(&record, probe)),
            ),
            LockState::Free if super::Stale::read(self).is_some() => (State::Stale, None),
            LockState::Free => (State::Stopped, None),
        };
        Ok(Summary {
            instance,
            state,
            running,
            dead_supervisor: (state == State::Stale).then_some(dead_supervisor).flatten(),
        })
    }
}

/// Where a server that never answered listens instead, read from `/proc` now: the processes
/// below its supervisor.
fn diagnosis(record: &Record) -> Option<String> {
    if record.ready || record.pid == 0 {
        return None;
    }
    let given = diagnose::Given {
        port: record.port,
        socket_handoff: record.handoff == Handoff::Socket,
        socket_inode: record.socket_inode,
    };
    diagnose::look(record.supervisor_pid, &given).map(|misplaced| misplaced.to_string())
}

fn running(record: &Record, probe: bool) -> Running {
    let health = match (&record.health_path, probe && record.ready) {
        (Some(path), true) => {
            let addr = health::client_addr(record.host, record.port);
            let timeout = record.check_timeout.max(Duration::from_millis(1));
            match health::http_status(addr, path, Some(timeout)) {
                Ok(status) if health::is_success(status) => Health::Healthy,
                _ => Health::Unhealthy,
            }
        }
        _ => Health::Unknown,
    };
    Running {
        pid: record.pid,
        supervisor_pid: record.supervisor_pid,
        port: record.port,
        host: record.host.to_string(),
        url: record.url.clone(),
        handoff: record.handoff,
        started_at: record.started_at_text(),
        uptime_secs: record.uptime().as_secs(),
        health,
        environment: record.environment.clone(),
        replicas: (!record.replicas.is_empty()).then(|| record.replicas.clone()),
        diagnosis: diagnosis(record),
        generation: record.generation,
        reloaded_at: record
            .reloaded_at
            .map(|at| humantime::format_rfc3339_millis(at).to_string()),
        build: record.build.clone(),
    }
}

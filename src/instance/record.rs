//! The record of a running instance (`<instance>.json`, with `<instance>.pid` beside it) and the
//! word a run leaves when it ends (`<instance>.ended`): typed values, written atomically, read as
//! small regular files of this user's that are never followed and never block.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{InstanceName, STATE_FILE_LIMIT};
use crate::config::Handoff;
use crate::os::{self, StartTime};
use crate::supervise::build::BuildReport;

/// What `<instance>.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) instance: InstanceName,
    /// The server (the first replica's, with replicas).
    pub(crate) pid: u32,
    pub(crate) supervisor_pid: u32,
    pub(crate) port: u16,
    pub(crate) host: IpAddr,
    pub(crate) url: String,
    pub(crate) handoff: Handoff,
    #[serde(with = "rfc3339")]
    pub(crate) started_at: SystemTime,
    pub(crate) package: String,
    pub(crate) bin: String,
    pub(crate) manifest_path: PathBuf,
    pub(crate) portguard_version: String,
    /// The server's process start time, to prove later that `pid` is still the same process.
    pub(crate) pid_start_time: Option<StartTime>,
    /// The same for the supervisor.
    pub(crate) supervisor_start_time: Option<StartTime>,
    /// Whether the current server has answered since it was (re)started.
    #[serde(default)]
    pub(crate) ready: bool,
    /// What `status` probes for health.
    #[serde(default)]
    pub(crate) health_path: Option<String>,
    #[serde(default, rename = "check_timeout_ms", with = "millis")]
    pub(crate) check_timeout: Duration,
    /// The supervisor's grace period, which `stop` waits for before it takes over.
    #[serde(default, rename = "shutdown_timeout_ms", with = "millis")]
    pub(crate) shutdown_timeout: Duration,
    /// The `env.<NAME>` table the instance was started with.
    #[serde(default)]
    pub(crate) environment: Option<String>,
    /// With `--replicas N` (N > 1): the pids of the replicas now running, in replica order
    /// (`pid` is the first of them); absent for a single server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) replicas: Vec<u32>,
    /// In socket handoff, the inode of the listening socket handed over: after a crash, the
    /// processes that still hold that very socket are the server's, wherever they went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) socket_inode: Option<u64>,
    /// How many times a new build has taken over during this run (a reload or a restart);
    /// absent before the first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) generation: u32,
    /// When the last of those took over.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::supervise::build::rfc3339_millis::option"
    )]
    pub(crate) reloaded_at: Option<SystemTime>,
    /// The last build of this run (`--watch`, `restart`), once there has been one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) build: Option<BuildReport>,
}

impl Record {
    /// The start time as the contract shows it: RFC 3339, UTC, whole seconds.
    pub(crate) fn started_at_text(&self) -> String {
        humantime::format_rfc3339_seconds(self.started_at).to_string()
    }

    /// Whether the supervisor the record names still runs as the same process (where its start
    /// time was recorded): a zombie, an exited one or a reused pid does not.
    pub(crate) fn supervisor_lives(&self) -> bool {
        let pid = self.supervisor_pid;
        os::is_running(pid)
            && self
                .supervisor_start_time
                .as_ref()
                .is_none_or(|recorded| os::start_time(pid).as_ref() == Some(recorded))
    }

    pub(crate) fn uptime(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.started_at)
            .unwrap_or_default()
    }
}

/// How the last run of an instance ended: written by its supervisor just before it lets go of
/// the lock, so that `stop` can say what happened (and whether SIGKILL was needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ended {
    pub(crate) supervisor_pid: u32,
    #[serde(rename = "ended_at", with = "rfc3339")]
    pub(crate) at: SystemTime,
    pub(crate) exit_code: i32,
    /// A server had to be ended with SIGKILL.
    pub(crate) killed: bool,
    /// The package the run was of, so that `-p` still finds a stopped instance's log.
    #[serde(default)]
    pub(crate) package: Option<String>,
}

/// Reads a small state file of this user's.
pub(super) fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = os::read_private_file(path, STATE_FILE_LIMIT).map_err(|why| anyhow!("{why}"))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("`{}` is not a portguard record", path.display()))
}

/// Renames a fresh temporary file over `path`: readers see the old file or the new, never half
/// of one, and a symbolic link at `path` is replaced rather than followed. With `durable`, the
/// contents reach the disk before the rename.
pub(super) fn write_atomically(
    dir: &Path,
    path: &Path,
    contents: &[u8],
    durable: bool,
) -> Result<()> {
    let mut temp = tempfile::Builder::new()
        .prefix(".portguard-")
        .tempfile_in(dir)
        .with_context(|| format!("could not create a temporary file in `{}`", dir.display()))?;
    temp.write_all(contents)
        .and_then(|()| {
            if durable {
                temp.as_file().sync_data()
            } else {
                Ok(())
            }
        })
        .with_context(|| format!("could not write `{}`", temp.path().display()))?;
    temp.persist(path)
        .with_context(|| format!("could not write `{}`", path.display()))?;
    Ok(())
}

/// Encodes a value as the pretty JSON the state files hold.
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_string_pretty(value).context("could not encode a state file")?;
    Ok(format!("{json}\n").into_bytes())
}

/// Times as the contract writes them: RFC 3339, UTC, whole seconds.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*time))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's `skip_serializing_if` hands over a reference"
)]
pub(super) fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Durations as whole milliseconds, the unit of the configuration keys they come from.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            instance: InstanceName::new("web").expect("valid"),
            pid: 42,
            supervisor_pid: 41,
            port: 5000,
            host: "127.0.0.1".parse().expect("address"),
            url: "http://127.0.0.1:5000".to_owned(),
            handoff: Handoff::Socket,
            started_at: humantime::parse_rfc3339("2026-12-01T10:00:00Z").expect("time"),
            package: "web".to_owned(),
            bin: "web".to_owned(),
            manifest_path: PathBuf::from("/p/Cargo.toml"),
            portguard_version: "0.1.0".to_owned(),
            pid_start_time: None,
            supervisor_start_time: None,
            ready: true,
            health_path: Some("/health".to_owned()),
            check_timeout: Duration::from_millis(1500),
            shutdown_timeout: Duration::from_secs(5),
            environment: None,
            replicas: Vec::new(),
            socket_inode: Some(7),
            generation: 0,
            reloaded_at: None,
            build: None,
        }
    }

    #[test]
    fn a_record_keeps_the_contract_s_field_names_and_units() {
        let json: serde_json::Value =
            serde_json::from_slice(&encode(&record()).expect("encode")).expect("json");
        assert_eq!(json["started_at"], "2026-12-01T10:00:00Z");
        assert_eq!(json["handoff"], "socket");
        assert_eq!(json["host"], "127.0.0.1");
        assert_eq!(json["check_timeout_ms"], 1500);
        assert_eq!(json["shutdown_timeout_ms"], 5000);
        assert!(json.get("replicas").is_none());
    }

    #[test]
    fn a_record_round_trips_and_a_bad_name_is_refused() {
        let bytes = encode(&record()).expect("encode");
        let back: Record = serde_json::from_slice(&bytes).expect("decode");
        assert_eq!(back, record());
        let text = String::from_utf8(bytes)
            .expect("utf-8")
            .replace("\"web\"", "\"../x\"");
        assert!(serde_json::from_str::<Record>(&text).is_err());
    }
}

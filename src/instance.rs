//! An instance's life: its name, its state folder and files, its typed record, the lock that
//! decides whether it runs, the lookups the operating commands share, the proofs that a pid is
//! really ours, and the cleanup of what a crashed run left.
//!
//! Whether an instance runs is decided by an OS file lock that its supervisor holds for the whole
//! run, never by whether a file exists: a crash releases the lock with the process, so nothing a
//! crash leaves behind can block the next start. The record is for people and tools, and is never
//! trusted on its own: before a signal, the target is proved (see [`proof`]).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::exit_codes::BadInput;
use crate::{os, output};

mod find;
mod lock;
mod log;
pub(crate) mod operate;
pub(crate) mod proof;
mod record;
mod stale;
pub(crate) mod summary;

pub(crate) use find::Scope;
pub(crate) use lock::{Acquired, InstanceLock, LockState, acquire};
pub(crate) use log::{Capture, LOG_LIMIT, open_for_reading};
pub(crate) use record::{Ended, Record};
pub(crate) use stale::{Stale, clean_up};

/// How much of a record or a small state file is ever read: a record is a few hundred bytes,
/// and a planted multi-gigabyte file must not be read whole.
pub(crate) const STATE_FILE_LIMIT: u64 = 64 * 1024;

/// An instance's name: it becomes file names, so it keeps to a safe alphabet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct InstanceName(String);

impl InstanceName {
    /// # Errors
    /// For an empty name, one starting with `.`, a long one, or one with other characters than
    /// letters, digits, `-`, `_` and `.`.
    pub(crate) fn new(name: &str) -> Result<Self, BadInput> {
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name.len() <= 100
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if valid {
            Ok(InstanceName(name.to_owned()))
        } else {
            Err(BadInput(format!(
                "invalid instance name `{}`: use letters, digits, `-`, `_` and `.` (not first)",
                output::inert(name)
            )))
        }
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for InstanceName {
    type Error = BadInput;
    fn try_from(name: String) -> Result<Self, BadInput> {
        InstanceName::new(&name)
    }
}

impl From<InstanceName> for String {
    fn from(name: InstanceName) -> String {
        name.0
    }
}

/// `.portguard/` (or `PORTGUARD_STATE_DIR`): a folder of this user's that no one else can write.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The state folder of a workspace that `serve-safe` creates; `PORTGUARD_STATE_DIR`
    /// overrides it.
    pub(crate) fn locate(workspace_root: &Path, override_dir: Option<PathBuf>) -> Self {
        let path = override_dir.unwrap_or_else(|| workspace_root.join(".portguard"));
        StateDir { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The state folder for commands that must answer in milliseconds: no `cargo metadata`,
    /// just the nearest `.portguard/` at or above `start` that is safely this user's. One that
    /// another account owns or can write is passed over with a warning: what it holds could name
    /// any process.
    pub(crate) fn find(start: &Path, override_dir: Option<PathBuf>) -> Option<Self> {
        if let Some(path) = override_dir {
            return trusted_or_warn(&path).then_some(StateDir { path });
        }
        start
            .ancestors()
            .map(|dir| dir.join(".portguard"))
            .filter(|path| fs::symlink_metadata(path).is_ok())
            .find(|path| trusted_or_warn(path))
            .map(|path| StateDir { path })
    }

    /// Every instance that has a file here, sorted by name.
    pub(crate) fn instances(&self) -> Vec<InstanceName> {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut names: Vec<InstanceName> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|file| {
                let (name, extension) = file.rsplit_once('.')?;
                let ours = matches!(extension, "lock" | "pid" | "json" | "log");
                ours.then(|| InstanceName::new(name).ok())?
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Creates the folder if needed and refuses one that is not a private directory of this
    /// user's, or that this user cannot write to.
    ///
    /// # Errors
    /// When it cannot be created, is not a directory, belongs to another user, is writable by
    /// others, or is read-only.
    pub(crate) fn create(&self) -> Result<()> {
        match fs::symlink_metadata(&self.path) {
            // There already: it must be safely ours, whatever made it.
            Ok(_) => {
                if let Err(why) = os::check_private_dir(&self.path) {
                    bail!("refusing to use the state folder: {why}");
                }
            }
            Err(_) => os::create_private_dir(&self.path).with_context(|| {
                format!(
                    "could not create the state folder `{}`",
                    self.path.display()
                )
            })?,
        }
        // Found now, before anything starts: a server started over a folder where its record
        // cannot be written is one `stop` cannot find.
        os::can_write_dir(&self.path).with_context(|| {
            format!(
                "the state folder `{}` is not writable; portguard keeps its lock and records there",
                self.path.display()
            )
        })
    }

    /// The files of one instance.
    pub(crate) fn instance(&self, name: &InstanceName) -> InstanceFiles {
        let file = |extension: &str| self.path.join(format!("{name}.{extension}"));
        InstanceFiles {
            lock: file("lock"),
            pid: file("pid"),
            json: file("json"),
            log: file("log"),
            ended: file("ended"),
            name: name.clone(),
            dir: self.path.clone(),
        }
    }
}

/// Whether a state folder may be believed; says why not when it may not.
fn trusted_or_warn(path: &Path) -> bool {
    match os::check_private_dir(path) {
        Ok(()) => true,
        Err(why) => {
            output::warning(format!(
                "skipping a state folder portguard cannot trust: {why}"
            ));
            false
        }
    }
}

/// The paths of one instance's state.
#[derive(Debug, Clone)]
pub(crate) struct InstanceFiles {
    pub(crate) name: InstanceName,
    pub(crate) lock: PathBuf,
    pub(crate) pid: PathBuf,
    pub(crate) json: PathBuf,
    pub(crate) log: PathBuf,
    /// How the last run ended, kept after it for `stop` to report (see [`Ended`]).
    pub(crate) ended: PathBuf,
    dir: PathBuf,
}

impl InstanceFiles {
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the record.
    ///
    /// # Errors
    /// When it is missing, not a small regular file of this user's, or not a record.
    pub(crate) fn read_record(&self) -> Result<Record> {
        record::read(&self.json)
    }

    /// How the last run ended, if a run left word of it.
    pub(crate) fn read_ended(&self) -> Option<Ended> {
        record::read(&self.ended).ok()
    }
}

//! The instance lock and the state files beside it in `.portguard/`.
//!
//! Whether an instance runs is decided by an OS file lock that its supervisor holds for the whole
//! run, never by whether a file exists: a crash releases the lock with the process, so nothing a
//! crash leaves behind can block the next start. The `.pid` and `.json` files are for people and
//! tools, and are never trusted on their own.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::exit_codes::BadInput;

/// `.portguard/` (or `PORTGUARD_STATE_DIR`), checked to be a directory this user owns.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The state folder of a workspace; `PORTGUARD_STATE_DIR` overrides it.
    #[must_use]
    pub fn locate(workspace_root: &Path, override_dir: Option<PathBuf>) -> Self {
        let path = override_dir.unwrap_or_else(|| workspace_root.join(".portguard"));
        StateDir { path }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state folder for commands that must answer in milliseconds: no `cargo metadata`,
    /// just the nearest `.portguard/` folder at or above `start`.
    #[must_use]
    pub fn find(start: &Path, override_dir: Option<PathBuf>) -> Option<Self> {
        if let Some(path) = override_dir {
            return Some(StateDir { path });
        }
        start
            .ancestors()
            .map(|dir| dir.join(".portguard"))
            .find(|path| fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()))
            .map(|path| StateDir { path })
    }

    /// Every instance that has a file here, sorted by name.
    #[must_use]
    pub fn instances(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|file| {
                let (name, extension) = file.rsplit_once('.')?;
                let ours = matches!(extension, "lock" | "pid" | "json");
                (ours && validate_instance(name).is_ok()).then(|| name.to_owned())
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Creates the folder if needed and refuses one that is not a directory of this user's, or
    /// that this user cannot write to.
    ///
    /// # Errors
    /// When it cannot be created, is not a directory, belongs to another user, or is read-only.
    pub fn create(&self) -> Result<()> {
        self.create_owned()?;
        // Found now, before anything starts: the lock file may exist already, and a server
        // started over a folder where its record cannot be written is one `stop` cannot find.
        rustix::fs::accessat(
            rustix::fs::CWD,
            &self.path,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            rustix::fs::AtFlags::EACCESS,
        )
        .with_context(|| {
            format!(
                "the state folder `{}` is not writable; portguard keeps its lock and records there",
                self.path.display()
            )
        })
    }

    /// Creates the folder if needed and refuses one that is not a directory of this user's.
    fn create_owned(&self) -> Result<()> {
        match fs::create_dir(&self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "could not create the state folder `{}`",
                        self.path.display()
                    )
                });
            }
        }
        // symlink_metadata: a link planted in place of the folder is refused, not followed.
        let meta = fs::symlink_metadata(&self.path).with_context(|| {
            format!("could not read the state folder `{}`", self.path.display())
        })?;
        if !meta.is_dir() {
            bail!(
                "the state folder `{}` exists but is not a directory",
                self.path.display()
            );
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            bail!(
                "the state folder `{}` belongs to another user (uid {}); refusing to use it",
                self.path.display(),
                meta.uid()
            );
        }
        Ok(())
    }

    /// The files of one instance. The name must already be valid (see [`validate_instance`]).
    #[must_use]
    pub fn instance(&self, name: &str) -> InstanceFiles {
        InstanceFiles {
            name: name.to_owned(),
            lock: self.path.join(format!("{name}.lock")),
            pid: self.path.join(format!("{name}.pid")),
            json: self.path.join(format!("{name}.json")),
            log: self.path.join(format!("{name}.log")),
            dir: self.path.clone(),
        }
    }
}

/// Instance names become file names: keep them to a safe alphabet.
///
/// ```
/// use portguard::lock::validate_instance;
///
/// assert!(validate_instance("api-2").is_ok());
/// assert!(validate_instance("../etc").is_err());
/// ```
///
/// # Errors
/// For an empty name, one starting with `.`, or one with other characters than
/// letters, digits, `-`, `_` and `.`.
pub fn validate_instance(name: &str) -> Result<(), BadInput> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(BadInput(format!(
            "invalid instance name `{name}`: use letters, digits, `-`, `_` and `.` (not first)"
        )))
    }
}

/// The paths of one instance's state.
#[derive(Debug, Clone)]
pub struct InstanceFiles {
    pub name: String,
    pub lock: PathBuf,
    pub pid: PathBuf,
    pub json: PathBuf,
    pub log: PathBuf,
    dir: PathBuf,
}

/// What `<instance>.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub instance: String,
    pub pid: u32,
    pub supervisor_pid: u32,
    pub port: u16,
    pub host: String,
    pub url: String,
    pub handoff: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub package: String,
    pub bin: String,
    pub manifest_path: PathBuf,
    pub portguard_version: String,
    /// The server's process start time, to prove later that `pid` is still the same process.
    pub pid_start_time: Option<String>,
    /// The same for the supervisor.
    pub supervisor_start_time: Option<String>,
    /// Whether the current server has answered since it was (re)started.
    #[serde(default)]
    pub ready: bool,
    /// What `status` probes for health.
    #[serde(default)]
    pub health_path: Option<String>,
    #[serde(default)]
    pub check_timeout_ms: u64,
    /// The supervisor's grace period, which `stop` waits for before it takes over.
    #[serde(default)]
    pub shutdown_timeout_ms: u64,
    /// The `env.<NAME>` table the instance was started with.
    #[serde(default)]
    pub environment: Option<String>,
    /// With `--replicas N` (N > 1): the pids of the replicas now running, in replica order
    /// (`pid` is the first of them); absent for a single server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<u32>,
}

/// What an earlier run left behind although its supervisor is gone.
#[derive(Debug)]
pub struct Stale {
    pub record: Option<Record>,
    /// The `.json` or `.pid` could not be read as a record.
    pub unreadable: bool,
}

/// Holding this means the instance is ours. Dropping it removes the `.pid` and `.json` files
/// and releases the lock; the empty lock file stays, since removing it would let two starters
/// lock two different files of the same name.
#[derive(Debug)]
pub struct InstanceLock {
    files: InstanceFiles,
    _file: File,
}

/// The answer of [`acquire`].
#[derive(Debug)]
pub enum Acquired {
    /// The lock is ours; `Stale` tells what a crashed run had left.
    Ours(InstanceLock, Option<Stale>),
    /// Another supervisor holds it. Its record, when it has written one already.
    Running(Option<Record>),
}

/// Takes the instance lock without waiting.
///
/// # Errors
/// When the lock file cannot be opened or locked for another reason than contention.
pub fn acquire(files: &InstanceFiles) -> Result<Acquired> {
    let file = open_nofollow(&files.lock, true)?;
    // A starting supervisor writes its record moments after taking the lock, and a passing
    // status check holds a shared lock for an instant: retry briefly before answering.
    for attempt in 0..50 {
        // Fully qualified: std's own `File::try_lock` has the same name.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {
                let stale = read_stale(files);
                let lock = InstanceLock {
                    files: files.clone(),
                    _file: file,
                };
                if stale.is_some() {
                    lock.clear();
                }
                return Ok(Acquired::Ours(lock, stale));
            }
            Err(fs4::TryLockError::WouldBlock) => {
                if let Ok(record) = read_record(files) {
                    return Ok(Acquired::Running(Some(record)));
                }
                if attempt < 49 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Err(fs4::TryLockError::Error(error)) => {
                return Err(error)
                    .with_context(|| format!("could not lock `{}`", files.lock.display()));
            }
        }
    }
    Ok(Acquired::Running(None))
}

/// Whether a supervisor holds the lock now, without ever blocking a starter for long.
///
/// # Errors
/// When the lock file exists but cannot be opened.
pub fn is_held(files: &InstanceFiles) -> Result<bool> {
    let file = match open_nofollow(&files.lock, false) {
        Ok(file) => file,
        Err(error) if is_not_found(&error) => return Ok(false),
        Err(error) => return Err(error),
    };
    // A shared lock conflicts with the supervisor's exclusive one only.
    Ok(match fs4::FileExt::try_lock_shared(&file) {
        Ok(()) => false,
        Err(fs4::TryLockError::WouldBlock) => true,
        Err(fs4::TryLockError::Error(error)) => {
            return Err(error)
                .with_context(|| format!("could not test the lock `{}`", files.lock.display()));
        }
    })
}

/// Waits until no supervisor holds the lock, at most `timeout`; true when released.
///
/// A blocking shared lock wakes the moment the supervisor's exclusive lock goes, so a stop is
/// noticed at once rather than at the next tick of a polling loop.
#[must_use]
pub fn wait_released(files: &InstanceFiles, timeout: Duration) -> bool {
    let Ok(file) = open_nofollow(&files.lock, false) else {
        return true;
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("portguard-lock-wait".to_owned())
        .spawn(move || {
            let released = fs4::FileExt::lock_shared(&file).is_ok();
            // Our own shared lock must be gone before the caller acts on the answer (say, by
            // taking the lock to clean up).
            drop(file);
            let _ = sender.send(released);
        });
    if spawned.is_err() {
        return !is_held(files).unwrap_or(true);
    }
    // The waiting thread dies with the process when the timeout wins.
    receiver.recv_timeout(timeout).unwrap_or(false)
}

fn is_not_found(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// Reads `<instance>.json`.
///
/// # Errors
/// When it is missing, not a regular file, or not a record.
pub fn read_record(files: &InstanceFiles) -> Result<Record> {
    let text = read_nofollow(&files.json)?;
    serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a portguard record", files.json.display()))
}

fn read_stale(files: &InstanceFiles) -> Option<Stale> {
    let json_exists = fs::symlink_metadata(&files.json).is_ok();
    let pid_exists = fs::symlink_metadata(&files.pid).is_ok();
    if !json_exists && !pid_exists {
        return None;
    }
    let record = read_record(files).ok();
    Some(Stale {
        unreadable: record.is_none(),
        record,
    })
}

impl InstanceLock {
    #[must_use]
    pub fn files(&self) -> &InstanceFiles {
        &self.files
    }

    /// Writes `<instance>.pid` and `<instance>.json`, each atomically.
    ///
    /// # Errors
    /// When the state folder cannot be written.
    pub fn write_record(&self, record: &Record) -> Result<()> {
        let json =
            serde_json::to_string_pretty(record).context("could not encode the instance record")?;
        write_atomically(
            &self.files.dir,
            &self.files.json,
            format!("{json}\n").as_bytes(),
        )?;
        write_atomically(
            &self.files.dir,
            &self.files.pid,
            format!("{}\n", record.pid).as_bytes(),
        )
    }

    /// Removes `<instance>.pid` and `<instance>.json`; links are removed, never followed.
    pub fn clear(&self) {
        for path in [&self.files.pid, &self.files.json] {
            let _ = fs::remove_file(path);
        }
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Renames a fresh temporary file over `path`: readers see the old file or the new, never half
/// of one, and a symbolic link at `path` is replaced rather than followed.
fn write_atomically(dir: &Path, path: &Path, contents: &[u8]) -> Result<()> {
    let mut temp = tempfile::Builder::new()
        .prefix(".portguard-")
        .tempfile_in(dir)
        .with_context(|| format!("could not create a temporary file in `{}`", dir.display()))?;
    temp.write_all(contents)
        .and_then(|()| temp.as_file().sync_data())
        .with_context(|| format!("could not write `{}`", temp.path().display()))?;
    temp.persist(path)
        .with_context(|| format!("could not write `{}`", path.display()))?;
    Ok(())
}

/// Starts `<instance>.log` afresh for a detached run; only the lock holder may.
///
/// # Errors
/// When the log cannot be created.
pub fn create_log(files: &InstanceFiles) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(&files.log)
        .with_context(|| format!("could not create the log `{}`", files.log.display()))
}

fn open_nofollow(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("could not open `{}`", path.display()))
}

fn read_nofollow(path: &Path) -> Result<String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("could not open `{}`", path.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)
        .with_context(|| format!("could not read `{}`", path.display()))?;
    Ok(text)
}

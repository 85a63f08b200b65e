//! The instance lock: an exclusive `flock` on `<instance>.lock`, held by the supervisor for the
//! whole run. Readers test it with a shared lock, which conflicts with the exclusive one only, so
//! `status` never gets in a starter's way.

use std::fs::{self, File};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};

use super::record::{self, Ended, Record};
use super::{InstanceFiles, stale::Stale};
use crate::os;

/// Holding this means the instance is ours. Dropping it removes the `.pid` and `.json` files
/// and releases the lock; the empty lock file stays, since removing it would let two starters
/// lock two different files of the same name.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    files: InstanceFiles,
    _file: File,
}

/// The answer of [`acquire`].
#[derive(Debug)]
pub(crate) enum Acquired {
    /// The lock is ours; `Stale` tells what a crashed run had left (not yet cleaned up).
    Ours(InstanceLock, Option<Stale>),
    /// Another supervisor holds it. Its record, when it has written one already.
    Running(Option<Record>),
}

/// Whether a supervisor holds an instance's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockState {
    Held,
    Free,
}

/// How many times [`acquire`] looks, 10 ms apart, before it calls the lock taken.
const ATTEMPTS: u32 = 50;

/// Takes the instance lock without waiting.
///
/// # Errors
/// When the lock file cannot be opened, is not this user's, or cannot be locked for another
/// reason than contention.
pub(crate) fn acquire(files: &InstanceFiles) -> Result<Acquired> {
    let file = open_lock(&files.lock, true).map_err(|why| anyhow!("refusing the lock: {why}"))?;
    // A starting supervisor writes its record moments after taking the lock, and a passing
    // status check holds a shared lock for an instant: retry briefly before answering.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match os::try_lock(&file, true) {
            Ok(true) => {
                let stale = Stale::read(files);
                return Ok(Acquired::Ours(
                    InstanceLock {
                        files: files.clone(),
                        _file: file,
                    },
                    stale,
                ));
            }
            Ok(false) => {
                let record = files.read_record().ok();
                // A supervisor that was just killed holds the lock until the last of its
                // threads is gone: only a live one is an answer at once.
                let live = record.as_ref().is_some_and(Record::supervisor_lives);
                if live || attempt == ATTEMPTS {
                    return Ok(Acquired::Running(record));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("could not lock `{}`", files.lock.display()));
            }
        }
    }
}

impl InstanceFiles {
    /// Whether a supervisor holds the lock now, without ever blocking a starter for long.
    ///
    /// # Errors
    /// When the lock file exists but cannot be opened or tested, or is not this user's: an
    /// error is never read as "not running".
    pub(crate) fn lock_state(&self) -> Result<LockState> {
        let Some(file) = open_existing_lock(&self.lock)? else {
            return Ok(LockState::Free);
        };
        match os::try_lock(&file, false) {
            Ok(true) => Ok(LockState::Free),
            Ok(false) => Ok(LockState::Held),
            Err(error) => Err(error)
                .with_context(|| format!("could not test the lock `{}`", self.lock.display())),
        }
    }

    pub(crate) fn is_running(&self) -> Result<bool> {
        Ok(self.lock_state()? == LockState::Held)
    }

    /// Whether process `pid` holds the lock, where the OS can tell (`None` where it cannot).
    ///
    /// # Errors
    /// When the lock file cannot be opened or the process's descriptors cannot be read.
    pub(crate) fn is_held_by(&self, pid: u32) -> Result<Option<bool>> {
        let file = open_existing_lock(&self.lock)?
            .ok_or_else(|| anyhow!("the lock `{}` is gone", self.lock.display()))?;
        os::holds_lock(pid, &file).with_context(|| {
            format!(
                "could not tell whether pid {pid} holds `{}`",
                self.lock.display()
            )
        })
    }

    /// Waits until no supervisor holds the lock, at most `timeout`; true when released.
    ///
    /// A blocking shared lock wakes the moment the supervisor's exclusive lock goes, so a stop
    /// is noticed at once rather than at the next tick of a polling loop.
    ///
    /// # Errors
    /// When the lock file cannot be opened, or the wait fails for another reason than time.
    pub(crate) fn wait_released(&self, timeout: Duration) -> Result<bool> {
        let Some(file) = open_existing_lock(&self.lock)? else {
            return Ok(true);
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("portguard-lock-wait".to_owned())
            .spawn(move || {
                let released = os::lock_shared(&file);
                // Our own shared lock must be gone before the caller acts on the answer (say,
                // by taking the lock to clean up).
                drop(file);
                let _ = sender.send(released);
            })
            .context("could not start a thread to wait for the lock")?;
        // The waiting thread dies with the process when the timeout wins.
        match receiver.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(true),
            Ok(Err(error)) => Err(error)
                .with_context(|| format!("could not wait for the lock `{}`", self.lock.display())),
            Err(_) => Ok(false),
        }
    }
}

impl InstanceLock {
    pub(crate) fn files(&self) -> &InstanceFiles {
        &self.files
    }

    /// Writes `<instance>.pid` and `<instance>.json`, each atomically.
    ///
    /// # Errors
    /// When the state folder cannot be written.
    pub(crate) fn write_record(&self, record: &Record) -> Result<()> {
        let dir = self.files.dir();
        record::write_atomically(dir, &self.files.json, &record::encode(record)?, true)?;
        let pid = format!("{}\n", record.pid);
        record::write_atomically(dir, &self.files.pid, pid.as_bytes(), true)
    }

    /// Leaves word of how this run ended, for a `stop` that waits on the lock.
    ///
    /// # Errors
    /// When the state folder cannot be written.
    pub(crate) fn write_ended(&self, ended: &Ended) -> Result<()> {
        // Not synced: it sits between the servers' end and the lock's release, which `stop`
        // waits for, and losing it to a power cut loses only a remark.
        record::write_atomically(
            self.files.dir(),
            &self.files.ended,
            &record::encode(ended)?,
            false,
        )
    }

    /// Removes `<instance>.pid` and `<instance>.json`; links are removed, never followed.
    pub(crate) fn clear(&self) {
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

/// Opens the lock file without following a link or blocking, and refuses one that is not a
/// private regular file of this user's: a lock another account controls could keep an instance
/// "running" forever, or make a planted record look like ours.
fn open_lock(path: &Path, create: bool) -> Result<File, os::PrivateFileError> {
    os::open_private_rw(path, create, 0o600)
}

/// A lock that cannot be opened is an error, said plainly; a missing one is `None`.
fn open_existing_lock(path: &Path) -> Result<Option<File>> {
    match open_lock(path, false) {
        Ok(file) => Ok(Some(file)),
        Err(os::PrivateFileError::NotFound { .. }) => Ok(None),
        Err(why) => Err(anyhow!("refusing the lock: {why}")),
    }
}

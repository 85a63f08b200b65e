//! Per-user port reservations: an OS-locked file per port in the per-user folder, held for as
//! long as the instance runs. In env handoff the server binds its port a moment after portguard
//! checked it; the reservation makes every other portguard of this user, in any project, skip
//! that port in the meantime, so no two starts ever get the same port.
//!
//! A file stays after its reservation is given back, for the next start on that port: creating
//! a file costs more than the whole rest of choosing a port. Only ports the OS picked, which
//! rarely come again, have their file removed. Removing a lock file is safe only with a check
//! on the other side: a start that opened the file just before it was removed would lock a file
//! nobody else can find, so a lock counts only while the path still names the locked file.
//!
//! The folder is private, but a file could have been put there by someone else before it was
//! made so: files are opened without following links, a file that is not this user's is
//! replaced rather than used, and its label is never believed or shown.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::MetadataExt as _;

use std::path::{Path, PathBuf};

use crate::os::{self, PrivateFileError};

/// Longest label read: an owner line is a name and a path.
const MAX_LABEL_BYTES: u64 = 4096;

/// Where reservations live, and who this portguard is, for others' messages.
#[derive(Debug, Clone)]
pub struct Reservations {
    dir: PathBuf,
    owner: String,
}

/// A port this process holds; dropping it (or dying) gives the port back.
#[derive(Debug)]
pub struct Reservation {
    pub port: u16,
    file: File,
    path: PathBuf,
    owner: String,
    remove: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.remove {
            // Still locked here: whoever opens the path next creates a new file, and whoever
            // had opened this one finds, once it gets the lock, that the path no longer names it.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Reservation {
    /// Removes the file when the reservation is given back, instead of keeping it for the next
    /// start on the port.
    pub fn remove_when_released(&mut self) {
        self.remove = true;
    }

    /// Says who holds it, for other portguards' messages. Only the port actually taken is
    /// labelled: candidates that turn out busy are given back at once, and writing costs more
    /// than the lock itself.
    ///
    /// # Errors
    /// When the reservation file cannot be written.
    pub fn label(&mut self) -> std::io::Result<()> {
        // A port used again by the same instance already carries its label: reading is cheaper
        // than truncating and writing.
        let mut current = Vec::with_capacity(self.owner.len() + 1);
        (&self.file)
            .take(self.owner.len() as u64 + 1)
            .read_to_end(&mut current)?;
        if current == self.owner.as_bytes() {
            return Ok(());
        }
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(self.owner.as_bytes())
    }
}

/// The answer of [`Reservations::claim`].
#[derive(Debug)]
pub enum Claim {
    Ours(Reservation),
    /// Another portguard holds it; who, as it wrote.
    Taken(String),
}

impl Reservations {
    /// Reservations in `dir` (the per-user folder), made by `owner` (such as
    /// "`api` in /src/shop").
    #[must_use]
    pub fn new(dir: PathBuf, owner: String) -> Self {
        Reservations { dir, owner }
    }

    /// Takes `port` if no other portguard holds it. Never waits.
    ///
    /// # Errors
    /// When the reservation file cannot be opened or locked for another reason than contention.
    pub fn claim(&self, port: u16) -> std::io::Result<Claim> {
        let path = path(&self.dir, port);
        let mut contended = 0;
        // Each lap needs a release to land between an open and a lock; a handful is plenty.
        for _ in 0..100 {
            // Not through a link, and a FIFO put in place of a file does not block the start.
            let mut file = match os::open_private_rw(&path, true, 0o600) {
                Ok(file) => file,
                // Not ours (or not a file): the folder is ours, so it is replaced, not used.
                Err(
                    PrivateFileError::Link { .. }
                    | PrivateFileError::NotRegular { .. }
                    | PrivateFileError::ForeignOwner { .. }
                    | PrivateFileError::WritableByOthers { .. },
                ) => {
                    remove_foreign(&path)?;
                    continue;
                }
                Err(PrivateFileError::Io { error, .. })
                    if error.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    remove_foreign(&path)?;
                    continue;
                }
                Err(why) => return Err(std::io::Error::other(why)),
            };
            match os::try_lock(&file, true) {
                // Locked a file that a release removed after this open: start over.
                Ok(true) if !names(&path, &file) => {}
                Ok(true) => {
                    let owner = self.owner.clone();
                    return Ok(Claim::Ours(Reservation {
                        port,
                        file,
                        path,
                        owner,
                        remove: false,
                    }));
                }
                // `holder` (as `cargo portguard ports` asks) holds a shared lock for an instant:
                // look twice before calling a port taken.
                Ok(false) if contended == 0 => {
                    contended += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Ok(false) => {
                    return Ok(Claim::Taken(read_owner(&mut file)));
                }
                Err(error) => return Err(error),
            }
        }
        Err(std::io::Error::other(format!(
            "`{}` was replaced under every attempt to lock it",
            path.display()
        )))
    }
}

/// Who holds `port` in `dir`, if anyone does now: the label of this user's portguard that
/// holds it, or a description of a file that is not this user's (its label is not shown).
#[must_use]
pub fn holder(dir: &Path, port: u16) -> Option<String> {
    let mut file = os::open_no_follow_read(&path(dir, port)).ok()?;
    match os::try_lock(&file, false) {
        Ok(false) => Some(read_owner(&mut file)),
        _ => None,
    }
}

/// Whether `path` still names the open `file` (the same device and inode).
fn names(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(named), Ok(open)) => named.dev() == open.dev() && named.ino() == open.ino(),
        _ => false,
    }
}

fn path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("port-{port}.lock"))
}

/// Removes what stands at `path` if it is not a file of this user's; the caller opens afresh.
fn remove_foreign(path: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    let own = meta.is_file() && meta.uid() == os::effective_uid() && meta.mode() & 0o022 == 0;
    if !own {
        std::fs::remove_file(path).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!(
                    "`{}` is not a reservation file of this user's and cannot be removed: {error}",
                    crate::output::inert_path(path)
                ),
            )
        })?;
    }
    Ok(())
}

/// The label in a held reservation file, raw (printing it is the caller's business, through
/// [`crate::output::inert`]), and only from a file of this user's.
fn read_owner(file: &mut File) -> String {
    match file.metadata() {
        Ok(meta) if meta.uid() != os::effective_uid() => {
            return format!(
                "a reservation file of another user (uid {}), label not shown",
                meta.uid()
            );
        }
        Ok(meta) if meta.is_file() && meta.mode() & 0o022 == 0 => {}
        _ => return "another portguard (unreadable label)".to_owned(),
    }
    let mut bytes = Vec::new();
    let _ = file
        .rewind()
        .and_then(|()| (&*file).take(MAX_LABEL_BYTES).read_to_end(&mut bytes));
    let owner = String::from_utf8_lossy(&bytes);
    if owner.trim().is_empty() {
        "another portguard".to_owned()
    } else {
        owner.trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_port_is_taken_for_everyone_else_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = Reservations::new(dir.path().to_owned(), "`api` in /src/shop".to_owned());
        let second = Reservations::new(dir.path().to_owned(), "`web` in /src/blog".to_owned());
        let Claim::Ours(mut held) = first.claim(4100).unwrap() else {
            panic!("a fresh port is free")
        };
        held.label().unwrap();
        match second.claim(4100).unwrap() {
            Claim::Taken(by) => assert_eq!(by, "`api` in /src/shop"),
            Claim::Ours(_) => panic!("two reservations of one port"),
        }
        assert_eq!(
            holder(dir.path(), 4100).as_deref(),
            Some("`api` in /src/shop")
        );
        assert!(holder(dir.path(), 4101).is_none());
        drop(held);
        assert!(holder(dir.path(), 4100).is_none());
        assert!(
            path(dir.path(), 4100).is_file(),
            "kept for the next start on the port"
        );
        assert!(matches!(second.claim(4100).unwrap(), Claim::Ours(_)));
    }

    #[test]
    fn a_removed_reservation_file_leaves_no_lock_that_counts() {
        let dir = tempfile::tempdir().unwrap();
        let reservations = Reservations::new(dir.path().to_owned(), "`api`".to_owned());
        let Claim::Ours(mut held) = reservations.claim(4200).unwrap() else {
            panic!("a fresh port is free")
        };
        held.remove_when_released();
        let file = path(dir.path(), 4200);
        // Opened before the release, as a start racing with it would.
        let early = os::open_private_rw(&file, false, 0o600).unwrap();
        drop(held);
        assert!(!file.exists(), "the released reservation's file is removed");
        assert!(os::try_lock(&early, true).unwrap());
        assert!(
            !names(&file, &early),
            "a lock on the removed file must not count"
        );
        let Claim::Ours(again) = reservations.claim(4200).unwrap() else {
            panic!("the port is free again")
        };
        assert!(names(&file, &again.file));
    }
}

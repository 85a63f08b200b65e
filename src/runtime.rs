//! The per-user runtime folder, shared by every project of one user: port reservations, notify
//! sockets and the `cargo metadata` cache live there (`$XDG_RUNTIME_DIR/portguard`, else
//! `portguard-<uid>` in the temp dir).
//!
//! What is read from it decides which project `cargo run` builds and which ports count as
//! taken, so it must be a folder only this user can write: created with mode 0700 by the
//! `mkdir` itself (never a window with the umask's mode), and checked, without following a
//! link, to be a folder of this user's that nobody else may enter each time it is used. In the
//! temp dir anybody can create `portguard-<uid>` first; a folder that is not this user's is
//! never used, and a private folder in the home folder (`~/.cache/portguard/run`) takes its
//! place.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

use crate::os;
use crate::output::{self, inert_path};

/// One warning per process about the fallback, however often the folder is asked for.
static WARNED: AtomicBool = AtomicBool::new(false);

/// The per-user runtime folder, found to be a real folder of this user's with mode 0700.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuntimeDir {
    path: PathBuf,
}

/// Why a path cannot be used as a private folder of this user's.
#[derive(Debug)]
pub(crate) struct Unfit {
    path: PathBuf,
    why: Why,
}

#[derive(Debug)]
enum Why {
    Link {
        uid: u32,
    },
    NotFolder {
        uid: u32,
    },
    Foreign {
        uid: u32,
    },
    /// Ours, but others may enter it, and it is only to be looked at, not fixed.
    Open {
        mode: u32,
    },
    /// The folder holding it lets others rename it away and put another in its place.
    OpenParent {
        parent: PathBuf,
        uid: u32,
        mode: u32,
    },
    Io(std::io::Error),
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = inert_path(&self.path);
        match &self.why {
            Why::Link { uid } => write!(
                f,
                "`{path}` is a symbolic link (owned by uid {uid}), not a folder"
            ),
            Why::NotFolder { uid } => {
                write!(f, "`{path}` is not a folder (owned by uid {uid})")
            }
            Why::Foreign { uid } => write!(
                f,
                "`{path}` belongs to another user (uid {uid}); portguard trusts nothing in it"
            ),
            Why::Open { mode } => write!(
                f,
                "`{path}` may be entered by other users (mode {:o})",
                mode & 0o7777
            ),
            Why::OpenParent { parent, uid, mode } => write!(
                f,
                "`{path}` is in `{}` (owned by uid {uid}, mode {:o}), where others may replace it",
                inert_path(parent),
                mode & 0o7777
            ),
            Why::Io(error) => write!(f, "cannot use `{path}`: {error}"),
        }
    }
}

impl std::error::Error for Unfit {}

impl Unfit {
    fn new(path: &Path, why: Why) -> Self {
        Unfit {
            path: path.to_owned(),
            why,
        }
    }
}

impl RuntimeDir {
    /// The runtime folder, created if needed: `$XDG_RUNTIME_DIR/portguard` (an absolute
    /// `xdg_runtime_dir`), else `portguard-<uid>` in the temp dir. When that path is not a
    /// private folder of this user's and cannot be made one (another user created it first, or
    /// a link stands there), `$HOME/.cache/portguard/run` is used instead, with a warning that
    /// names the path and its owner. A folder of this user's that others may enter is made
    /// private (mode 0700).
    ///
    /// # Errors
    /// When neither folder can be had.
    pub(crate) fn create(xdg_runtime_dir: Option<PathBuf>, home: Option<PathBuf>) -> Result<Self> {
        let shared = shared_path(xdg_runtime_dir);
        let unfit = match make_private(&shared, true) {
            Ok(()) => return Ok(RuntimeDir { path: shared }),
            Err(unfit) => unfit,
        };
        let Some(home) = home.filter(|home| home.is_absolute()) else {
            anyhow::bail!("{unfit}, and without HOME there is no private folder to use instead");
        };
        let fallback = fallback_path(&home);
        if let Err(error) = make_fallback(&home) {
            anyhow::bail!("{unfit}, and the private folder to use instead failed: {error}");
        }
        if !WARNED.swap(true, Ordering::Relaxed) {
            output::warning(format!(
                "{unfit}: using `{}` instead",
                inert_path(&fallback)
            ));
        }
        Ok(RuntimeDir { path: fallback })
    }

    /// The folder's path. Use [`RuntimeDir::check`] before trusting what is in it again later.
    #[must_use]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Checks again that the folder is still a private folder of this user's (not replaced by
    /// a link, not opened up).
    ///
    /// # Errors
    /// When it no longer is.
    pub(crate) fn check(&self) -> Result<(), Unfit> {
        make_private(&self.path, false)
    }

    /// A private folder of this user's inside the runtime folder (such as `notify`), created
    /// with mode 0700 if needed and checked as the runtime folder itself is.
    ///
    /// # Errors
    /// When the runtime folder is no longer private, or the subfolder cannot be had.
    // Notify sockets are abstract on Linux; elsewhere they are files in a subfolder.
    #[cfg_attr(
        target_os = "linux",
        allow(dead_code, reason = "only the notify socket uses it, and not on Linux")
    )]
    pub(crate) fn subdir(&self, name: &str) -> Result<PathBuf, Unfit> {
        self.check()?;
        let path = self.path.join(name);
        make_private(&path, true)?;
        Ok(path)
    }
}

/// `$XDG_RUNTIME_DIR/portguard`, else `portguard-<uid>` in the temp dir.
fn shared_path(xdg_runtime_dir: Option<PathBuf>) -> PathBuf {
    match xdg_runtime_dir.filter(|dir| dir.is_absolute()) {
        Some(dir) => dir.join("portguard"),
        None => std::env::temp_dir().join(format!("portguard-{}", os::effective_uid())),
    }
}

/// `$HOME/.cache/portguard/run`: only its owner can create folders in a home folder.
fn fallback_path(home: &Path) -> PathBuf {
    home.join(".cache").join("portguard").join("run")
}

fn make_fallback(home: &Path) -> Result<(), Unfit> {
    check_owned_folder(home)?;
    let cache = home.join(".cache");
    match fs::create_dir(&cache) {
        Ok(()) => {
            // Created now, so ours; the mode is the umask's, and this folder is not private.
            let _ = fs::set_permissions(&cache, fs::Permissions::from_mode(0o700));
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(Unfit::new(&cache, Why::Io(error))),
    }
    check_owned_folder(&cache)?;
    let portguard = cache.join("portguard");
    make_private(&portguard, true)?;
    make_private(&portguard.join("run"), true)
}

/// A folder (links followed: a home folder may well be one) owned by this user.
fn check_owned_folder(path: &Path) -> Result<(), Unfit> {
    let meta = fs::metadata(path).map_err(|error| Unfit::new(path, Why::Io(error)))?;
    if !meta.is_dir() {
        return Err(Unfit::new(path, Why::NotFolder { uid: meta.uid() }));
    }
    if meta.uid() != os::effective_uid() {
        return Err(Unfit::new(path, Why::Foreign { uid: meta.uid() }));
    }
    Ok(())
}

/// Makes `path` a private folder of this user's (with `create`: creating it with mode 0700,
/// and closing a folder of ours that others may enter), or says why it is not one.
fn make_private(path: &Path, create: bool) -> Result<(), Unfit> {
    check_parent(path)?;
    if create {
        match os::mkdir_private(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(Unfit::new(path, Why::Io(error))),
        }
    }
    match inspect(path) {
        Err(Unfit {
            why: Why::Open { .. },
            ..
        }) if create => close(path),
        other => other,
    }
}

/// Whether `path` (the link itself, never followed) is a folder of this user's that nobody
/// else may enter, and that its owner can use.
fn inspect(path: &Path) -> Result<(), Unfit> {
    let meta = fs::symlink_metadata(path).map_err(|error| Unfit::new(path, Why::Io(error)))?;
    let uid = meta.uid();
    let why = if meta.file_type().is_symlink() {
        Why::Link { uid }
    } else if !meta.is_dir() {
        Why::NotFolder { uid }
    } else if uid != os::effective_uid() {
        Why::Foreign { uid }
    } else if meta.mode() & 0o077 != 0 || meta.mode() & 0o700 != 0o700 {
        Why::Open { mode: meta.mode() }
    } else {
        return Ok(());
    };
    Err(Unfit::new(path, why))
}

/// Sets mode 0700 on a folder of ours through a descriptor, so that a link put in its place
/// meanwhile is refused rather than followed.
fn close(path: &Path) -> Result<(), Unfit> {
    let uid = os::restrict_dir_to_owner(path).map_err(|error| Unfit::new(path, Why::Io(error)))?;
    if uid != os::effective_uid() {
        return Err(Unfit::new(path, Why::Foreign { uid }));
    }
    inspect(path)
}

/// The folder holding `path` must not let others rename it away and put their own in its
/// place: owned by this user or root, and not writable by others unless sticky (as `/tmp`).
fn check_parent(path: &Path) -> Result<(), Unfit> {
    let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    else {
        return Ok(());
    };
    // Followed: the temp dir itself is a link on macOS (`/var` to `/private/var`).
    let meta = fs::metadata(parent).map_err(|error| Unfit::new(parent, Why::Io(error)))?;
    let (uid, mode) = (meta.uid(), meta.mode());
    let sticky = mode & 0o1000 != 0;
    if (uid != os::effective_uid() && uid != 0) || (mode & 0o022 != 0 && !sticky) {
        return Err(Unfit::new(
            path,
            Why::OpenParent {
                parent: parent.to_owned(),
                uid,
                mode,
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_folder_is_private_and_an_open_one_of_ours_is_closed() {
        let parent = tempfile::tempdir().unwrap();
        let dir = RuntimeDir::create(Some(parent.path().to_owned()), None).unwrap();
        assert_eq!(dir.path(), parent.path().join("portguard"));
        assert_eq!(mode_of(dir.path()), 0o700);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(dir.check().is_err(), "an open folder fails the check");
        let again = RuntimeDir::create(Some(parent.path().to_owned()), None).unwrap();
        assert_eq!(again, dir);
        assert_eq!(mode_of(dir.path()), 0o700);
        let notify = dir.subdir("notify").unwrap();
        assert_eq!(mode_of(&notify), 0o700);
    }

    #[test]
    fn a_link_in_its_place_is_never_followed() {
        let parent = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(target.path(), parent.path().join("portguard")).unwrap();
        let home = tempfile::tempdir().unwrap();
        let dir = RuntimeDir::create(Some(parent.path().to_owned()), Some(home.path().to_owned()))
            .unwrap();
        assert_eq!(dir.path(), home.path().join(".cache/portguard/run"));
        for level in [".cache/portguard", ".cache/portguard/run"] {
            assert_eq!(mode_of(&home.path().join(level)), 0o700, "{level}");
        }
        let without_home = RuntimeDir::create(Some(parent.path().to_owned()), None);
        let error = without_home.unwrap_err().to_string();
        assert!(error.contains("is a symbolic link"), "{error}");
    }

    #[test]
    fn a_parent_others_may_write_to_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        fs::set_permissions(parent.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let error = make_private(&parent.path().join("portguard"), true).unwrap_err();
        assert!(matches!(error.why, Why::OpenParent { .. }), "{error}");
        fs::set_permissions(parent.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        make_private(&parent.path().join("portguard"), true).unwrap();
    }
}

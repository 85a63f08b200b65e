//! The per-user runtime folder shared by every project (port reservations, notify sockets, the
//! `cargo metadata` cache).

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

/// The per-user folder shared by every project (the contract's home of port reservations and
/// notify sockets): `$XDG_RUNTIME_DIR/portguard`, else a private folder in the temp dir named
/// with the user id.
///
/// # Errors
/// When it cannot be created or belongs to another user.
pub fn user_dir(xdg_runtime_dir: Option<PathBuf>) -> Result<PathBuf> {
    let path = user_dir_path(xdg_runtime_dir);
    match fs::create_dir(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => {
            return Err(error).with_context(|| format!("could not create `{}`", path.display()));
        }
    }
    let meta = fs::symlink_metadata(&path)
        .with_context(|| format!("could not read `{}`", path.display()))?;
    if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
        bail!("`{}` is not a folder of this user's", path.display());
    }
    // Others must not plant sockets or reservations here.
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("could not make `{}` private", path.display()))?;
    Ok(path)
}

/// Where [`user_dir`] is, without creating it (for readers such as `ports`).
pub fn user_dir_path(xdg_runtime_dir: Option<PathBuf>) -> PathBuf {
    match xdg_runtime_dir.filter(|dir| dir.is_absolute()) {
        Some(dir) => dir.join("portguard"),
        None => {
            std::env::temp_dir().join(format!("portguard-{}", rustix::process::geteuid().as_raw()))
        }
    }
}

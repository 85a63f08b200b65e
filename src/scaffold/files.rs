//! The files `init` changes, written as one transaction: all of them or none.

use std::fs::{self, Permissions};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// One file's new text, and what it had before (`None`: it does not exist yet).
#[derive(Debug, Clone)]
pub struct Change {
    pub path: PathBuf,
    pub before: Option<String>,
    pub after: String,
    /// For people: what changes, such as "aliases dev-safe, stop".
    pub summary: String,
}

impl Change {
    #[must_use]
    pub fn changes_anything(&self) -> bool {
        self.before.as_deref() != Some(self.after.as_str())
    }

    /// A unified diff of the change, paths shown relative to `root`.
    #[must_use]
    pub fn diff(&self, root: &Path) -> String {
        let shown = self
            .path
            .strip_prefix(root)
            .unwrap_or(&self.path)
            .display()
            .to_string();
        let before = self.before.as_deref().unwrap_or_default();
        let old_header = if self.before.is_some() {
            format!("a/{shown}")
        } else {
            "/dev/null".to_owned()
        };
        similar::TextDiff::from_lines(before, &self.after)
            .unified_diff()
            .context_radius(3)
            .header(&old_header, &format!("b/{shown}"))
            .to_string()
    }
}

/// A file's text, or `None` when there is none yet (what a [`Change`] has `before`).
///
/// # Errors
/// When the file exists but cannot be read; the message names it.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("could not read `{}`", path.display())),
    }
}

/// Writes every change or none. Each new text goes to a temporary file beside its target
/// first; only when all are written are they renamed into place, so a failure half-way (an
/// unwritable `.cargo/`, a full disk) leaves every file as it was.
///
/// # Errors
/// When any file cannot be written; the message names it.
pub fn apply(changes: &[Change]) -> Result<()> {
    let mut created_dirs = Vec::new();
    let staged = stage(changes, &mut created_dirs);
    let staged = match staged {
        Ok(staged) => staged,
        Err(error) => {
            remove_dirs(&created_dirs);
            return Err(error);
        }
    };
    let mut done: Vec<&Change> = Vec::new();
    for (change, (temp, target)) in changes.iter().zip(staged) {
        if let Err(error) = temp.persist(&target) {
            // Renames rarely fail once the files are written; put back what was renamed.
            for earlier in done {
                restore(earlier);
            }
            remove_dirs(&created_dirs);
            return Err(error.error)
                .with_context(|| format!("could not write `{}`", change.path.display()));
        }
        done.push(change);
    }
    Ok(())
}

fn stage(
    changes: &[Change],
    created_dirs: &mut Vec<PathBuf>,
) -> Result<Vec<(tempfile::NamedTempFile, PathBuf)>> {
    let mut staged = Vec::new();
    for change in changes {
        let target = write_target(&change.path)?;
        let dir = target.parent().unwrap_or(Path::new("."));
        if !dir.exists() {
            let first_missing = dir
                .ancestors()
                .take_while(|d| !d.exists())
                .last()
                .map(Path::to_owned);
            fs::create_dir_all(dir)
                .with_context(|| format!("could not create `{}`", dir.display()))?;
            created_dirs.extend(first_missing);
        }
        let mut temp = tempfile::Builder::new()
            .prefix(".portguard-init-")
            .tempfile_in(dir)
            .with_context(|| {
                format!(
                    "could not write `{}`: cannot create a file in `{}`",
                    change.path.display(),
                    dir.display()
                )
            })?;
        // A new file gets the usual mode, an existing one keeps its own.
        let mode = fs::metadata(&target).map_or(0o644, |meta| meta.permissions().mode());
        temp.as_file()
            .set_permissions(Permissions::from_mode(mode))
            .and_then(|()| temp.write_all(change.after.as_bytes()))
            .and_then(|()| temp.as_file().sync_all())
            .with_context(|| format!("could not write `{}`", change.path.display()))?;
        staged.push((temp, target));
    }
    Ok(staged)
}

/// Where the new text goes: a symbolic link (a `.env` shared between checkouts, say) is
/// written through and stays a link; renaming over it would replace it with a copy.
fn write_target(path: &Path) -> Result<PathBuf> {
    let is_link = fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink());
    if is_link {
        fs::canonicalize(path)
            .with_context(|| format!("could not follow the link `{}`", path.display()))
    } else {
        Ok(path.to_owned())
    }
}

fn restore(change: &Change) {
    let _ = match &change.before {
        Some(text) => fs::write(&change.path, text),
        None => fs::remove_file(&change.path),
    };
}

fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        let _ = fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: PathBuf, before: Option<&str>, after: &str) -> Change {
        Change {
            path,
            before: before.map(str::to_owned),
            after: after.to_owned(),
            summary: String::new(),
        }
    }

    #[test]
    fn writes_all_changes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "old").unwrap();
        let changes = [
            change(dir.path().join("a"), Some("old"), "new"),
            change(dir.path().join("sub/b"), None, "fresh"),
        ];
        apply(&changes).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "new");
        assert_eq!(
            fs::read_to_string(dir.path().join("sub/b")).unwrap(),
            "fresh"
        );
    }

    #[test]
    fn a_failure_half_way_leaves_every_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "old").unwrap();
        // A file where a folder must go: nothing can be created below it.
        fs::write(dir.path().join("blocked"), "").unwrap();
        let changes = [
            change(dir.path().join("a"), Some("old"), "new"),
            change(dir.path().join("new-dir/c"), None, "c"),
            change(dir.path().join("blocked/config.toml"), None, "x"),
        ];
        let error = apply(&changes).unwrap_err();
        assert!(format!("{error:#}").contains("blocked"), "{error:#}");
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "old");
        assert!(!dir.path().join("new-dir").exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }

    #[test]
    fn diffs_are_unified_and_name_the_file() {
        let root = Path::new("/p");
        let diff = change(
            root.join(".gitignore"),
            Some("target\n"),
            "target\n.portguard/\n",
        )
        .diff(root);
        assert!(
            diff.contains("--- a/.gitignore\n+++ b/.gitignore\n"),
            "{diff}"
        );
        assert!(diff.contains("+.portguard/\n"), "{diff}");
        let created = change(root.join("src/portguard.rs"), None, "fn x() {}\n").diff(root);
        assert!(
            created.starts_with("--- /dev/null\n+++ b/src/portguard.rs\n"),
            "{created}"
        );
    }
}

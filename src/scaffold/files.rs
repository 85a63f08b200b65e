//! The files `init` changes, written as one transaction: all of them or none.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, Permissions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::exit_codes::BadInput;
use crate::os;

/// One file's new text, and what it had before (`None`: it does not exist yet).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) path: PathBuf,
    pub(crate) before: Option<String>,
    pub(crate) after: String,
    /// For people: what changes, such as "aliases dev-safe, stop".
    pub(crate) summary: String,
}

impl Change {
    #[must_use]
    pub(crate) fn changes_anything(&self) -> bool {
        self.before.as_deref() != Some(self.after.as_str())
    }

    /// A unified diff of the change, paths shown relative to `root`.
    #[must_use]
    pub(crate) fn diff(&self, root: &Path) -> String {
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

/// The most portguard reads of a file it edits. Manifests, dotfiles and glue are kilobytes; a
/// file this large is not one of them, and reading it whole would only waste memory.
pub(crate) const READ_LIMIT: u64 = 4 * 1024 * 1024;

/// A file's text, or `None` when there is none yet (what a [`Change`] has `before`).
///
/// # Errors
/// When the file exists but cannot be read; the message names it. A FIFO, socket, device or
/// folder where the file should be, or a file over [`READ_LIMIT`], is bad input (exit 2).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    let Some(bytes) = read_bytes(path)? else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidData, "it is not valid UTF-8"))
        .with_context(|| format!("could not read `{}`", path.display()))
}

fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>> {
    let cannot_read = || format!("could not read `{}`", path.display());
    // Told from the metadata first, so that a device is never even opened.
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(cannot_read),
    };
    check_readable(path, &meta)?;
    // The file may have been replaced since; what is opened is checked again.
    let file = match os::open_without_waiting(path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(cannot_read),
    };
    let meta = file.metadata().with_context(cannot_read)?;
    check_readable(path, &meta)?;
    let mut bytes = Vec::new();
    file.take(READ_LIMIT + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot_read)?;
    if bytes.len() as u64 > READ_LIMIT {
        return Err(too_large(path).into());
    }
    Ok(Some(bytes))
}

fn check_readable(path: &Path, meta: &fs::Metadata) -> Result<(), BadInput> {
    if !meta.is_file() {
        return Err(BadInput(format!(
            "`{}` is {}, not a regular file; portguard reads and writes only regular files there",
            path.display(),
            os::file_kind(meta.file_type())
        )));
    }
    if meta.len() > READ_LIMIT {
        return Err(too_large(path));
    }
    Ok(())
}

fn too_large(path: &Path) -> BadInput {
    BadInput(format!(
        "`{}` is larger than {} MiB; portguard edits only files up to that size",
        path.display(),
        READ_LIMIT / (1024 * 1024)
    ))
}

/// A symbolic link on the way to a file about to be written that leads out of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutsideLink {
    /// The link itself: the file, or a folder on the way to it.
    pub(crate) link: PathBuf,
    /// Where it leads, every link on the way followed.
    pub(crate) target: PathBuf,
}

/// The symbolic links that writing `paths` would go through and that lead out of `root`: for
/// each path, the path itself and every folder between `root` and it; only the first such link
/// on the way is named, and each link once. A link that stays inside `root` is no concern, and
/// a path not below `root` was named outside it on purpose.
///
/// # Errors
/// When `root` cannot be resolved or a link cannot be read.
pub(crate) fn links_out_of<'a>(
    root: &Path,
    paths: impl IntoIterator<Item = &'a Path>,
) -> Result<Vec<OutsideLink>> {
    let real_root = fs::canonicalize(root)
        .with_context(|| format!("could not resolve `{}`", root.display()))?;
    let mut found: Vec<OutsideLink> = Vec::new();
    for path in paths {
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let mut step = root.to_owned();
        for component in relative.components() {
            step.push(component);
            let is_link = fs::symlink_metadata(&step).is_ok_and(|meta| meta.is_symlink());
            if !is_link {
                continue;
            }
            let target = resolve(&step)
                .with_context(|| format!("could not follow the link `{}`", step.display()))?;
            if !target.starts_with(&real_root) {
                if !found.iter().any(|known| known.link == step) {
                    found.push(OutsideLink {
                        link: step.clone(),
                        target,
                    });
                }
                // What lies beyond goes through this link: it is the one to name.
                break;
            }
        }
    }
    Ok(found)
}

/// Where `path` really is, every symbolic link on the way followed, including a last one that
/// points at a file that does not exist yet (which writing through it would create), so it
/// works where `fs::canonicalize` needs every part to exist.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    // As many links as Linux follows before it gives up with ELOOP.
    const MAX_LINKS: u32 = 40;
    let absolute = std::path::absolute(path)?;
    let mut pending: VecDeque<OsString> = parts(&absolute).collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == "/" {
            resolved = PathBuf::from("/");
        } else if part == ".." {
            resolved.pop();
        } else if part != "." {
            let next = resolved.join(&part);
            if fs::symlink_metadata(&next).is_ok_and(|meta| meta.is_symlink()) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(std::io::Error::other("too many levels of symbolic links"));
                }
                // A relative target is read from the link's folder, which `resolved` is.
                for target_part in parts(&fs::read_link(&next)?)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    pending.push_front(target_part);
                }
            } else {
                resolved = next;
            }
        }
    }
    Ok(resolved)
}

fn parts(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components()
        .map(|component| component.as_os_str().to_owned())
}

/// Writes every change or none. Each new text goes to a temporary file beside its target
/// first; only when all are written are they renamed into place, so a failure half-way (an
/// unwritable `.cargo/`, a full disk) leaves every file as it was.
///
/// # Errors
/// When any file cannot be written; the message names it.
pub(crate) fn apply(changes: &[Change]) -> Result<()> {
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
/// written through and stays a link; renaming over it would replace it with a copy. Whether a
/// link may lead out of the project is decided before, with [`links_out_of`].
fn write_target(path: &Path) -> Result<PathBuf> {
    let is_link = fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink());
    if is_link {
        resolve(path).with_context(|| format!("could not follow the link `{}`", path.display()))
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
    fn links_out_of_the_root_are_named_once_and_links_inside_are_not() {
        use std::os::unix::fs::symlink;

        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        fs::create_dir_all(root.join("shared")).unwrap();
        fs::create_dir_all(outside.path().join("cfg")).unwrap();
        // A file link out, a folder link out, a link inside, and a link inside that leads to
        // one out: a chain is followed to its end.
        symlink(outside.path().join("keys"), root.join(".gitignore")).unwrap();
        symlink(outside.path().join("cfg"), root.join(".cargo")).unwrap();
        symlink("shared/env", root.join(".env")).unwrap();
        symlink("../../outside-env", root.join("shared/example")).unwrap();
        symlink("shared/example", root.join(".env.example")).unwrap();
        let paths = [
            root.join(".gitignore"),
            root.join(".cargo/config.toml"),
            root.join(".cargo/other.toml"),
            root.join(".env"),
            root.join(".env.example"),
            root.join("Cargo.toml"),
        ];
        let found = links_out_of(&root, paths.iter().map(PathBuf::as_path)).unwrap();
        let real_outside = fs::canonicalize(outside.path()).unwrap();
        let real_dir = fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            found,
            [
                OutsideLink {
                    link: root.join(".gitignore"),
                    target: real_outside.join("keys"),
                },
                OutsideLink {
                    link: root.join(".cargo"),
                    target: real_outside.join("cfg"),
                },
                OutsideLink {
                    link: root.join(".env.example"),
                    target: real_dir.join("outside-env"),
                },
            ]
        );
    }

    #[test]
    fn resolve_follows_links_to_files_not_yet_there() {
        use std::os::unix::fs::symlink;

        let dir = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir(real.join("a")).unwrap();
        symlink("a", real.join("b")).unwrap();
        symlink("../b/./missing", real.join("a/link")).unwrap();
        assert_eq!(
            resolve(&real.join("b/link")).unwrap(),
            real.join("a/missing")
        );
        symlink("loop", real.join("loop")).unwrap();
        assert!(resolve(&real.join("loop")).is_err());
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_optional(&dir.path().join("none")).unwrap(), None);
        let error = read_optional(dir.path()).unwrap_err();
        assert!(error.downcast_ref::<BadInput>().is_some(), "{error:#}");
        assert!(format!("{error}").contains("is a folder"), "{error}");
        let large = dir.path().join("large");
        fs::File::create(&large)
            .unwrap()
            .set_len(READ_LIMIT + 1)
            .unwrap();
        let error = read_optional(&large).unwrap_err();
        assert!(error.downcast_ref::<BadInput>().is_some(), "{error:#}");
        assert!(format!("{error}").contains("larger than 4 MiB"), "{error}");
        let limit = dir.path().join("limit");
        fs::File::create(&limit)
            .unwrap()
            .set_len(READ_LIMIT)
            .unwrap();
        assert_eq!(
            read_optional(&limit).unwrap().map(|text| text.len()),
            Some(4 << 20)
        );
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

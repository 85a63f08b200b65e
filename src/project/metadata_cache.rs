//! `cargo metadata` costs about 14 ms, as much as everything else `cargo serve-safe` does before
//! `cargo run`. Its answer changes only when a manifest changes or a target appears or goes, so
//! the answer is kept in the user's runtime folder with a fingerprint of every file and folder
//! that decides it; any difference in the fingerprint means asking cargo again.
//!
//! Fingerprints are content digests (file bytes, sorted folder entries), not modification
//! times: a manifest rewritten within one clock tick with the same size would fool a time
//! stamp, and the cost of hashing a few small files is a few microseconds.
//!
//! An entry names the manifest `cargo run` is started with, so it is believed only from a
//! regular file of this user's that nobody else may write, in the private runtime folder; an
//! entry without a fingerprint is never fresh.
use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use cargo_metadata::Metadata;
use serde::{Deserialize, Serialize};

use crate::runtime::RuntimeDir;

/// Bumped whenever what is stored or fingerprinted changes, so old entries are ignored.
const FORMAT: u32 = 2;

/// A workspace's `--no-deps` answer is a few kilobytes per package; anything much larger is
/// not an entry portguard wrote.
const MAX_ENTRY_BYTES: u64 = 4 * 1024 * 1024;

/// What a stored answer was for: the cargo that gave it and the manifest it was asked about.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub(crate) struct Question {
    pub(crate) cargo: PathBuf,
    pub(crate) manifest: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    /// `None`: the path did not exist, and a target there would change the answer.
    digest: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    format: u32,
    question: Question,
    stamps: Vec<Stamp>,
    metadata: Metadata,
}

/// The stored answer to `question`, if every fingerprinted path is as it was.
pub(crate) fn load(dir: &RuntimeDir, question: &Question) -> Option<Metadata> {
    dir.check().ok()?;
    let bytes = read_own_file(&entry_path(dir.path(), question))?;
    let entry: Entry = serde_json::from_slice(&bytes).ok()?;
    let fresh = entry.format == FORMAT
        && entry.question == *question
        && !entry.stamps.is_empty()
        && entry
            .stamps
            .iter()
            .all(|stamp| digest(&stamp.path) == stamp.digest);
    fresh.then_some(entry.metadata)
}

/// The bytes of `path` if it is a regular file of this user's that nobody else may write, and
/// not larger than an entry can be. A link is not followed, and a FIFO does not block.
fn read_own_file(path: &Path) -> Option<Vec<u8>> {
    crate::os::read_private_file(path, MAX_ENTRY_BYTES).ok()
}

/// Keeps `metadata` as the answer to `question`. Best effort: a start never fails because the
/// cache cannot be written; the next one just asks cargo again.
pub(crate) fn store(dir: &RuntimeDir, question: Question, metadata: &Metadata) {
    if dir.check().is_err() {
        return;
    }
    let stamps = watched_paths(&question.manifest, metadata)
        .into_iter()
        .map(|path| Stamp {
            digest: digest(&path),
            path,
        })
        .collect();
    let path = entry_path(dir.path(), &question);
    let entry = Entry {
        format: FORMAT,
        question,
        stamps,
        metadata: metadata.clone(),
    };
    let Ok(json) = serde_json::to_vec(&entry) else {
        return;
    };
    // Written beside its final name (mode 0600) and renamed, so a reader never sees half an
    // entry, and whatever stood at the name, a link included, is replaced, not written through.
    let written = tempfile::Builder::new()
        .prefix(".metadata-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir.path())
        .and_then(|mut file| {
            file.write_all(&json)?;
            file.persist(&path).map_err(|error| error.error)
        });
    drop(written);
}

fn entry_path(dir: &Path, question: &Question) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    question.hash(&mut hasher);
    dir.join(format!("metadata-{:016x}.json", hasher.finish()))
}

/// Every path whose change can change what portguard reads from `cargo metadata --no-deps`:
/// the manifests, the folders where cargo discovers binaries and examples, the folders
/// holding members (a new member can match a `members` glob), and every `Cargo.toml` cargo
/// looks for above the manifest asked about and above each member, present or not: a
/// workspace manifest appearing there makes another workspace.
fn watched_paths(asked: &Path, metadata: &Metadata) -> Vec<PathBuf> {
    let root = metadata.workspace_root.as_std_path();
    let mut paths = vec![root.join("Cargo.toml"), asked.to_owned()];
    let members = metadata
        .workspace_packages()
        .into_iter()
        .map(|package| package.manifest_path.as_std_path());
    for manifest in std::iter::once(asked).chain(members) {
        let above = manifest.parent().and_then(Path::parent).into_iter();
        paths.extend(
            above
                .flat_map(Path::ancestors)
                .map(|folder| folder.join("Cargo.toml")),
        );
    }
    for package in metadata.workspace_packages() {
        let manifest = package.manifest_path.as_std_path();
        paths.push(manifest.to_owned());
        let Some(package_root) = manifest.parent() else {
            continue;
        };
        if let Some(holder) = package_root.parent().filter(|_| package_root != root) {
            paths.push(holder.to_owned());
        }
        paths.push(package_root.join("src"));
        for targets in [package_root.join("src/bin"), package_root.join("examples")] {
            // `src/bin/NAME/main.rs` and `examples/NAME/main.rs` are targets too.
            if let Ok(entries) = fs::read_dir(&targets) {
                paths.extend(
                    entries
                        .flatten()
                        .map(|entry| entry.path())
                        .filter(|path| path.is_dir()),
                );
            }
            paths.push(targets);
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// A digest of a file's bytes or a folder's sorted entry names; `None` when nothing is there.
fn digest(path: &Path) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    match fs::read_dir(path) {
        Ok(entries) => {
            let mut names: Vec<_> = entries.flatten().map(|entry| entry.file_name()).collect();
            names.sort();
            names.hash(&mut hasher);
        }
        Err(_) => fs::read(path).ok()?.hash(&mut hasher),
    }
    Some(hasher.finish())
}

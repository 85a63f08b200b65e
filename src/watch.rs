//! Watching the project's files for `--watch`: OS notifications on every folder of the watch
//! roots that counts, debounced into batches of changed paths.
//!
//! Folders are watched one by one, never recursively: a recursive watch would put one on each of
//! the thousands of folders of a target folder, and a build writing there would wake portguard.
//! Excluded folders (the target folder, `.portguard/`, `.git/`, any folder holding a
//! `CACHEDIR.TAG`, as cargo's target folders do) and ignored ones are skipped; folders created
//! later are added when their creation is seen.
//!
//! Only content changes count (creations, writes, removals, renames). Reads, which a build makes
//! of every source file, and metadata changes are dropped before the debouncer sees them.
//!
//! Three threads, each asleep while nothing happens: the OS notification loop, the debouncer,
//! and the one that filters batches and calls back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer};

use crate::exit_codes::BadInput;
use crate::gitignore::{Rules as IgnoreRules, Verdict};

/// What to watch.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The package folder, the folders of its local path dependencies, and `watch-paths`
    /// (absolute). A root may be a file.
    pub(crate) roots: Vec<PathBuf>,
    /// Never watched, never reported: the target folder and `.portguard/`. `.git/` and
    /// `.portguard/` folders are excluded wherever they are, without being listed.
    pub(crate) excluded: Vec<PathBuf>,
    /// `watch-ignore` patterns, in gitignore syntax, relative to each root.
    pub(crate) ignore: Vec<String>,
    /// `watch-debounce-ms`: how long the changes of one save are gathered into one batch.
    pub(crate) debounce: Duration,
}

/// The spec for `--watch` on a loaded project: the package folder, its local path
/// dependencies' folders (with `features`) and `watch-paths`; the target folder and the state
/// folder `state_dir` excluded; `watch-ignore` and `watch-debounce-ms`.
///
/// # Errors
/// A `watch-paths` entry that does not exist, named with where it was set ([`BadInput`]).
pub(crate) fn spec(
    loaded: &crate::config::Loaded,
    features: crate::project::Features<'_>,
    state_dir: &Path,
) -> Result<Spec, BadInput> {
    let config = &loaded.config;
    let mut roots = loaded.project.watch_roots(&loaded.cargo, features);
    for path in config.watch_paths(loaded.project.package_root()) {
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(BadInput(format!(
                "`{}` in watch-paths does not exist (from {})",
                crate::output::inert_path(&path),
                config.watch_paths.source
            )));
        }
        if !roots.contains(&path) {
            roots.push(path);
        }
    }
    Ok(Spec {
        roots,
        excluded: vec![
            loaded.project.target_directory.clone(),
            state_dir.to_owned(),
        ],
        ignore: config.watch_ignore.value.clone(),
        debounce: config.watch_debounce.value,
    })
}

/// The paths of one batch of changes: absolute, each once, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) paths: Vec<PathBuf>,
}

impl Changes {
    /// The changed files in a few words: `src/routes.rs`, `src/a.rs and src/b.rs`,
    /// `src/a.rs and 2 more files`; paths under `base` relative to it.
    #[must_use]
    pub(crate) fn describe(&self, base: &Path) -> String {
        let shown = |path: &PathBuf| {
            path.strip_prefix(base)
                .ok()
                .filter(|relative| !relative.as_os_str().is_empty())
                .unwrap_or(path)
                .display()
                .to_string()
        };
        // An editor's save often writes a temporary file and renames it over the real one:
        // the file that is gone by now is not what the developer changed. A deletion alone
        // is still named.
        let present: Vec<PathBuf> = self
            .paths
            .iter()
            .filter(|path| path.symlink_metadata().is_ok())
            .cloned()
            .collect();
        let paths = if present.is_empty() {
            &self.paths
        } else {
            &present
        };
        match paths.as_slice() {
            [] => "nothing".to_owned(),
            [only] => shown(only),
            [first, second] => format!("{} and {}", shown(first), shown(second)),
            [first, rest @ ..] => format!("{} and {} more files", shown(first), rest.len()),
        }
    }
}

/// A running watch; dropping it stops watching, and once the drop returns `on_change` is not
/// called again (unless the drop happens inside `on_change` itself).
pub(crate) struct Watcher {
    messages: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.messages.send(Message::Stop);
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

enum Message {
    Batch(DebounceEventResult),
    Stop,
}

/// Starts watching `spec.roots`; `on_change` is called from the watcher's thread once per
/// debounced batch that holds at least one path neither excluded nor ignored.
///
/// # Errors
/// A root that does not exist (named), a `watch-ignore` pattern that is not a glob, and the OS
/// refusing a watch (such as the limit on inotify watches).
pub(crate) fn start(spec: Spec, on_change: Box<dyn FnMut(Changes) + Send>) -> Result<Watcher> {
    let debounce = spec.debounce;
    let rules = Rules::new(spec)?;
    let (messages, inbox) = mpsc::channel();
    let batches = messages.clone();
    let config = notify_debouncer_mini::Config::default()
        .with_timeout(debounce.saturating_sub(stragglers(debounce)))
        .with_batch_mode(true)
        .with_notify_config(notify::Config::default().with_follow_symlinks(false));
    let debouncer = notify_debouncer_mini::new_debouncer_opt::<_, ContentWatcher>(
        config,
        move |batch: DebounceEventResult| {
            // Fails only once the watch is stopping.
            let _ = batches.send(Message::Batch(batch));
        },
    )
    .context("could not start watching files")?;
    let mut state = State {
        rules,
        debouncer,
        watched: HashSet::new(),
        stragglers: stragglers(debounce),
    };
    for root in state.rules.roots.clone() {
        state.watch_root(&root)?;
    }
    let thread = std::thread::Builder::new()
        .name("portguard-watch".to_owned())
        .spawn(move || state.run(&inbox, on_change))
        .context("could not start the file watching thread")?;
    Ok(Watcher {
        messages,
        thread: Some(thread),
    })
}

/// The debouncer hands over each path once it has been quiet for its timeout, checked when the
/// first path of the batch has: the paths of one save written a moment after the first come a
/// moment later, in a batch of their own. Waiting this long after a batch for such a one makes
/// one save one batch; the debouncer's own timeout is shortened by as much, so that the whole
/// still takes `debounce`.
fn stragglers(debounce: Duration) -> Duration {
    (debounce / 4).min(Duration::from_millis(20))
}

/// The platform's watcher, passing on only content changes: a build reads every source file,
/// and those reads must not look like a save.
struct ContentWatcher(RecommendedWatcher);

struct ContentOnly<F>(F);

impl<F: notify::EventHandler> notify::EventHandler for ContentOnly<F> {
    fn handle_event(&mut self, event: notify::Result<notify::Event>) {
        if let Ok(event) = &event
            && !is_content_change(event.kind)
        {
            return;
        }
        self.0.handle_event(event);
    }
}

fn is_content_change(kind: EventKind) -> bool {
    use notify::event::ModifyKind;
    match kind {
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        // `Any` and `Other` include a lost event queue: better one build too many than a save
        // missed.
        EventKind::Create(_)
        | EventKind::Remove(_)
        | EventKind::Modify(_)
        | EventKind::Any
        | EventKind::Other => true,
    }
}

impl notify::Watcher for ContentWatcher {
    fn new<F: notify::EventHandler>(handler: F, config: notify::Config) -> notify::Result<Self> {
        RecommendedWatcher::new(ContentOnly(handler), config).map(ContentWatcher)
    }

    fn watch(&mut self, path: &Path, recursive_mode: RecursiveMode) -> notify::Result<()> {
        self.0.watch(path, recursive_mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.0.unwatch(path)
    }

    fn kind() -> notify::WatcherKind {
        RecommendedWatcher::kind()
    }
}

/// One watch root.
#[derive(Debug, Clone)]
struct Root {
    path: PathBuf,
    /// A file root counts for itself alone (its folder is watched for it).
    is_file: bool,
}

/// What counts: the roots, the excluded folders, `watch-ignore`, and the `.gitignore` and
/// `.ignore` files found so far.
struct Rules {
    roots: Vec<Root>,
    excluded: Vec<PathBuf>,
    /// `watch-ignore`, matched against paths relative to their root.
    patterns: IgnoreRules,
    /// Each folder's `.ignore` and `.gitignore`, in that order of precedence, once read.
    ignore_files: HashMap<PathBuf, Vec<IgnoreRules>>,
}

/// Whether `path` lies in a folder that cargo made to create `excluded` (its target folder)
/// atomically: `targetXXXXXX` beside it, renamed into place at once, so gone by the time the
/// change is looked at.
fn is_staging_of(path: &Path, excluded: &Path) -> bool {
    let (Some(parent), Some(name)) = (excluded.parent(), excluded.file_name()) else {
        return false;
    };
    let Ok(relative) = path.strip_prefix(parent) else {
        return false;
    };
    let Some(Component::Normal(first)) = relative.components().next() else {
        return false;
    };
    let staging = parent.join(first);
    first != name
        && first
            .as_encoded_bytes()
            .starts_with(name.as_encoded_bytes())
        && staging.symlink_metadata().is_err()
}

/// Folder names excluded wherever they are.
const EXCLUDED_NAMES: [&str; 2] = [".git", ".portguard"];

/// Files whose change takes effect on the rules.
const IGNORE_FILES: [&str; 2] = [".ignore", ".gitignore"];

impl Rules {
    fn new(spec: Spec) -> Result<Self> {
        let mut roots = Vec::new();
        for path in &spec.roots {
            let canonical = std::fs::canonicalize(path)
                .with_context(|| format!("cannot watch `{}`", path.display()))?;
            let is_file = !canonical.is_dir();
            roots.push(Root {
                path: canonical,
                is_file,
            });
        }
        if roots.is_empty() {
            bail!("nothing to watch: no watch root");
        }
        // Canonical like the roots, so that prefixes compare; one that does not exist yet (a
        // target folder before the first build) is compared as given.
        let excluded = spec
            .excluded
            .into_iter()
            .map(|path| std::fs::canonicalize(&path).unwrap_or(path))
            .collect();
        Ok(Rules {
            roots,
            excluded,
            patterns: patterns(&spec.ignore)?,
            ignore_files: HashMap::new(),
        })
    }

    /// Whether a change at `path` counts. A path that no longer exists is judged as a file.
    fn counts(&mut self, path: &Path, is_dir: bool) -> bool {
        if self
            .excluded
            .iter()
            .any(|excluded| path.starts_with(excluded) || is_staging_of(path, excluded))
        {
            return false;
        }
        let Some(root) = self
            .roots
            .iter()
            .filter(|root| {
                if root.is_file {
                    path == root.path
                } else {
                    path.starts_with(&root.path)
                }
            })
            .max_by_key(|root| root.path.as_os_str().len())
            .cloned()
        else {
            return false;
        };
        if root.is_file {
            return true;
        }
        let Ok(relative) = path.strip_prefix(&root.path) else {
            return false;
        };
        if !is_dir && path.file_name().is_some_and(is_editor_file) {
            return false;
        }
        // Top down, as git does: what is under an ignored folder is ignored, whatever a deeper
        // rule says.
        let mut at = root.path.clone();
        let mut components = relative.components().peekable();
        while let Some(component) = components.next() {
            let Component::Normal(name) = component else {
                return false;
            };
            if EXCLUDED_NAMES.iter().any(|excluded| name == *excluded) {
                return false;
            }
            at.push(name);
            let dir = is_dir || components.peek().is_some();
            let relative = at.strip_prefix(&root.path).unwrap_or(&at);
            if self.patterns.verdict(relative, dir) == Verdict::Ignored
                || self.ignored(&root.path, &at, dir)
            {
                return false;
            }
        }
        true
    }

    /// Whether the `.ignore` and `.gitignore` files between `root` and `path` ignore `path`:
    /// the deepest file with a rule for it decides.
    fn ignored(&mut self, root: &Path, path: &Path, is_dir: bool) -> bool {
        let mut dir = path.parent();
        while let Some(folder) = dir.filter(|folder| folder.starts_with(root)) {
            let relative = path.strip_prefix(folder).unwrap_or(path);
            for matcher in self.ignore_files_of(folder) {
                match matcher.verdict(relative, is_dir) {
                    Verdict::Ignored => return true,
                    Verdict::Kept => return false,
                    Verdict::Unspoken => {}
                }
            }
            dir = folder.parent();
        }
        false
    }

    fn ignore_files_of(&mut self, folder: &Path) -> &[IgnoreRules] {
        self.ignore_files
            .entry(folder.to_owned())
            .or_insert_with(|| {
                IGNORE_FILES
                    .iter()
                    .map(|name| folder.join(name))
                    .filter(|path| path.symlink_metadata().is_ok())
                    // A bad line is skipped, as git skips it; the rest of the file holds.
                    .map(|path| IgnoreRules::from_file(&path))
                    .collect()
            })
    }

    /// Whether a folder is never watched nor walked into, whatever the rules: a cache folder
    /// such as a target folder of a path dependency built on its own.
    fn is_cache(dir: &Path) -> bool {
        dir.join("CACHEDIR.TAG").is_file()
    }
}

/// `watch-ignore` as one matcher, for paths relative to their root.
///
/// # Errors
/// A pattern that is not a glob.
pub(crate) fn patterns(patterns: &[String]) -> Result<IgnoreRules> {
    IgnoreRules::from_lines(patterns).map_err(|(pattern, why)| {
        anyhow::anyhow!("invalid watch-ignore pattern `{pattern}`: {why}")
    })
}

/// Editors' swap, backup and lock files, and the file vim writes to test that a folder is
/// writable.
fn is_editor_file(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name == "4913"
        || name.ends_with('~')
        || name.starts_with(".#")
        || [".swp", ".swo", ".swx"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// What the watching thread owns.
struct State {
    rules: Rules,
    debouncer: Debouncer<ContentWatcher>,
    watched: HashSet<PathBuf>,
    /// How long to wait for the rest of a save after a batch (see [`stragglers`]).
    stragglers: Duration,
}

impl State {
    fn run(
        mut self,
        inbox: &mpsc::Receiver<Message>,
        mut on_change: Box<dyn FnMut(Changes) + Send>,
    ) {
        while let Ok(Message::Batch(first)) = inbox.recv() {
            let mut paths = Vec::new();
            let mut next = Some(first);
            while let Some(batch) = next.take() {
                match batch {
                    Ok(events) => paths.extend(events.into_iter().map(|event| event.path)),
                    Err(error) => crate::output::warning(format_args!("watching files: {error}")),
                }
                match inbox.recv_timeout(self.stragglers) {
                    Ok(Message::Batch(batch)) => next = Some(batch),
                    Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
            if let Some(changes) = self.changes(paths) {
                on_change(changes);
            }
        }
    }

    /// The batch's paths that count; watches the folders that appeared and forgets the ones
    /// that went.
    fn changes(&mut self, paths: Vec<PathBuf>) -> Option<Changes> {
        let mut reread = BTreeSet::new();
        for path in &paths {
            if path
                .file_name()
                .is_some_and(|name| IGNORE_FILES.iter().any(|file| name == *file))
                && let Some(folder) = path.parent()
            {
                self.rules.ignore_files.remove(folder);
                reread.insert(folder.to_owned());
            }
        }
        let mut counted = BTreeSet::new();
        for path in paths {
            // Not followed: a link to a folder is a file here.
            let metadata = std::fs::symlink_metadata(&path).ok();
            let is_dir = metadata.as_ref().is_some_and(std::fs::Metadata::is_dir);
            if metadata.is_none() {
                // Gone (removed or renamed away): a folder here later is a new one.
                self.watched.retain(|watched| !watched.starts_with(&path));
            }
            if !self.rules.counts(&path, is_dir) {
                continue;
            }
            if is_dir {
                self.watch_tree(&path);
            }
            counted.insert(path);
        }
        // Rules changed: folders they no longer ignore are watched from now on.
        for folder in reread {
            if self.watched.contains(&folder) {
                self.watch_tree(&folder);
            }
        }
        (!counted.is_empty()).then(|| Changes {
            paths: counted.into_iter().collect(),
        })
    }

    /// Watches a root: a folder and every folder under it that counts, or a file's folder.
    fn watch_root(&mut self, root: &Root) -> Result<()> {
        if root.is_file {
            let folder = root.path.parent().unwrap_or(&root.path).to_owned();
            return self.watch_one(&folder);
        }
        self.watch_one(&root.path)?;
        self.walk(&root.path, true)
    }

    /// Watches `folder` and what counts under it, after the start: failures are warnings.
    fn watch_tree(&mut self, folder: &Path) {
        if let Err(error) = self
            .watch_one(folder)
            .and_then(|()| self.walk(folder, false))
        {
            crate::output::warning(format_args!("{error:#}"));
        }
    }

    fn watch_one(&mut self, folder: &Path) -> Result<()> {
        if self.watched.contains(folder) || Rules::is_cache(folder) {
            return Ok(());
        }
        match self
            .debouncer
            .watcher()
            .watch(folder, RecursiveMode::NonRecursive)
        {
            Ok(()) => {
                self.watched.insert(folder.to_owned());
                Ok(())
            }
            // Removed since it was seen: nothing to watch.
            Err(error) if matches!(&error.kind, notify::ErrorKind::PathNotFound) => Ok(()),
            Err(notify::Error {
                kind: notify::ErrorKind::Io(error),
                ..
            }) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => {
                Err(error).with_context(|| format!("cannot watch `{}`", folder.display()))
            }
        }
    }

    /// Watches the folders under `folder` that count, depth first. `strict`: a folder that
    /// cannot be read is an error, else it is skipped (it may be going away).
    fn walk(&mut self, folder: &Path, strict: bool) -> Result<()> {
        let mut pending = vec![folder.to_owned()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(_) if !strict || dir != folder => continue,
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot read `{}`", dir.display()));
                }
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    continue;
                }
                let path = entry.path();
                if Rules::is_cache(&path) || !self.rules.counts(&path, true) {
                    continue;
                }
                self.watch_one(&path)?;
                pending.push(path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

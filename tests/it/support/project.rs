//! Fixture projects: copies of tests/fixtures (and of the README's examples) in temp dirs of
//! their own, their manifests and state files, and whole-tree snapshots to prove what a command
//! did or did not touch.
//!
//! Fixture copies all build into one shared target dir, so the fixture server
//! compiles once per test run. The copies keep the template's file times, and
//! cargo hashes path packages by their path relative to the workspace root,
//! so every copy is the same unit to cargo: after the first build, a copy's
//! `cargo run` only checks freshness. The price is that a copy must not change
//! its Rust sources while it uses the shared dir (every other test would run
//! the changed binary); `write_file` refuses that, see `own_target_dir`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use super::command::cargo_bin;
use super::net::free_port;
use super::process::{
    kill_processes_inside, kill_recorded_processes, processes_inside, wait_until,
};

/// The instance name portguard gives the fixture by default (its binary name).
pub const FIXTURE_INSTANCE: &str = "fixture-server";

/// Exit code of the fixture when portguard broke the contract (see
/// tests/fixtures/server-core); it also says why on stderr.
pub const FIXTURE_CONTRACT_VIOLATION: i32 = 90;

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The target dir every fixture copy shares unless it opts out.
pub fn shared_target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixture-target")
}

/// The fixture binary as built in the shared target dir (debug profile).
pub fn fixture_binary() -> PathBuf {
    shared_target_dir().join("debug").join(format!(
        "{FIXTURE_INSTANCE}{}",
        std::env::consts::EXE_SUFFIX
    ))
}

/// Builds one copy of the fixture into the shared target dir, once per test
/// binary, so that no test's timeout has to cover compiling `server-core`.
/// Returns that copy's Cargo.lock, which holds no paths and so fits every
/// copy. Panics with cargo's output if the fixture does not build.
pub fn ensure_fixture_built() -> &'static str {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let project = TestProject::fixture_unbuilt("warm-up");
        let output = project
            .command(cargo_bin(), &["build", "--quiet"])
            .output()
            .map_err(|err| format!("cannot run cargo: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "building the fixture server failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        fs::read_to_string(project.root.join("Cargo.lock"))
            .map_err(|err| format!("the fixture build left no Cargo.lock: {err}"))
    });
    match result {
        Ok(lockfile) => lockfile,
        Err(message) => panic!("{message}"),
    }
}

/// A copy of a fixture project in a temp dir of its own.
pub struct TestProject {
    pub dir: tempfile::TempDir,
    /// The package root: `dir` itself, or a folder in it (`fixture_in`).
    pub root: PathBuf,
    /// `CARGO_TARGET_DIR` for everything the harness starts in this project.
    pub target_dir: PathBuf,
}

impl TestProject {
    /// A copy of tests/fixtures/server, built into the shared target dir.
    pub fn fixture() -> Self {
        Self::fixture_in("")
    }

    /// Like `fixture`, with the package root in a folder named `subdir` of the
    /// temp dir (say, "my project", to have a space in the path; "" for the
    /// temp dir itself).
    pub fn fixture_in(subdir: &str) -> Self {
        let lockfile = ensure_fixture_built();
        let project = Self::fixture_unbuilt(subdir);
        // Without it each copy's first cargo run resolves and writes one,
        // under the package cache lock, and says so on stderr.
        fs::write(project.root.join("Cargo.lock"), lockfile).expect("write Cargo.lock");
        project
    }

    /// A copy of tests/fixtures/broken: package `broken-server`, which fails
    /// to compile with a type error.
    pub fn broken() -> Self {
        Self::copy_of("broken", "")
    }

    fn fixture_unbuilt(subdir: &str) -> Self {
        Self::copy_of("server", subdir)
    }

    fn copy_of(template: &str, subdir: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("portguard-test-")
            .tempdir()
            .expect("create temp dir");
        let root = if subdir.is_empty() {
            dir.path().to_path_buf()
        } else {
            dir.path().join(subdir)
        };
        copy_template(&fixtures_dir().join(template), &root);
        Self {
            dir,
            root,
            target_dir: shared_target_dir(),
        }
    }

    /// Gives this project a target dir of its own (`<root>/target`): needed
    /// before editing its Rust sources or running `cargo clean` in it.
    pub fn own_target_dir(mut self) -> Self {
        self.target_dir = self.root.join("target");
        self
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("Cargo.toml")
    }

    /// Sets `[package.metadata.portguard]` to `toml`, which may go on with
    /// sub-tables such as `[package.metadata.portguard.env.ci]`. Replaces
    /// what an earlier call set.
    pub fn set_metadata(&self, toml: &str) {
        const HEADER: &str = "\n[package.metadata.portguard]\n";
        let path = self.manifest_path();
        let mut manifest = fs::read_to_string(&path).expect("read Cargo.toml");
        // Earlier calls appended the table at the end, so it is the tail.
        if let Some(start) = manifest.find(HEADER) {
            manifest.truncate(start);
        }
        if !manifest.ends_with('\n') {
            manifest.push('\n');
        }
        manifest.push_str(HEADER);
        manifest.push_str(toml);
        manifest.push('\n');
        fs::write(&path, manifest).expect("write Cargo.toml");
    }

    /// `set_metadata` with a preferred port that was free a moment ago and no
    /// fallback list before `toml`; returns the port. Without it, parallel
    /// tests all start from the default 5000 and its fallbacks.
    pub fn set_metadata_on_free_port(&self, toml: &str) -> u16 {
        let port = free_port();
        self.set_metadata(&format!(
            "preferred-port = {port}\nfallback-ports = []\n{toml}"
        ));
        port
    }

    /// Writes `contents` to `rel` under the package root, creating folders.
    /// Panics for a Rust source while the project shares the target dir: the
    /// changed binary would be what every other test runs.
    pub fn write_file(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
        let rel = rel.as_ref();
        let is_source = rel.extension() == Some(OsStr::new("rs"));
        assert!(
            !is_source || self.target_dir != shared_target_dir(),
            "write_file({}): call own_target_dir() on this project before changing \
             its Rust sources; fixture copies share compiled code",
            rel.display()
        );
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent folders");
        }
        fs::write(&path, contents).expect("write file");
    }

    pub fn read_file(&self, rel: impl AsRef<Path>) -> String {
        let path = self.root.join(rel);
        fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
    }

    /// Where portguard keeps state for this project by default.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".portguard")
    }

    pub fn pid_file(&self, instance: &str) -> PathBuf {
        self.state_dir().join(format!("{instance}.pid"))
    }

    pub fn json_file(&self, instance: &str) -> PathBuf {
        self.state_dir().join(format!("{instance}.json"))
    }

    /// The pid in `<instance>.pid`, if the file exists. Panics if it holds
    /// anything but a pid and a newline.
    pub fn read_pid(&self, instance: &str) -> Option<u32> {
        let text = fs::read_to_string(self.pid_file(instance)).ok()?;
        match text.strip_suffix('\n').map(str::parse) {
            Some(Ok(pid)) => Some(pid),
            _ => panic!("{instance}.pid should be a pid and a newline, found {text:?}"),
        }
    }

    /// `<instance>.json`, if it exists. Panics if it is not valid JSON: the
    /// contract says it is written atomically, never seen half-written.
    pub fn read_json(&self, instance: &str) -> Option<serde_json::Value> {
        let text = fs::read_to_string(self.json_file(instance)).ok()?;
        match serde_json::from_str(&text) {
            Ok(value) => Some(value),
            Err(err) => panic!("{instance}.json is not valid JSON ({err}): {text:?}"),
        }
    }
}

impl Drop for TestProject {
    fn drop(&mut self) {
        // A --detach run, or a server that outlived its supervisor, would
        // otherwise keep running (and hold the temp dir) after the test.
        // Recorded supervisors go first, found by the pid and start time in
        // their `.json` (on every platform), so that none restarts a server
        // while the rest are killed.
        kill_recorded_processes(&self.state_dir());
        kill_processes_inside(self.dir.path());
        // Nothing a test started may outlive it. A process can appear after
        // the table was read (a build step, a restarted server): kill again
        // until none is left.
        let mut left = Vec::new();
        let gone = wait_until(Duration::from_secs(10), || {
            kill_processes_inside(self.dir.path());
            left = processes_inside(self.dir.path());
            left.is_empty()
        });
        assert!(
            gone || thread::panicking(),
            "processes of this test survived its cleanup: {left:?}"
        );
    }
}

/// Copies a template folder, leaving out build output, with `@CORE@` in
/// Cargo.toml replaced by the path of tests/fixtures/server-core. File times
/// are kept so that cargo finds the copy's sources no newer than the shared
/// build (otherwise every copy would relink the binary all tests run).
pub fn copy_template(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create project folder");
    for entry in fs::read_dir(from).expect("read fixture template") {
        let entry = entry.expect("read fixture template entry");
        let name = entry.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        let (source, dest) = (entry.path(), to.join(&name));
        if entry.file_type().expect("file type").is_dir() {
            copy_template(&source, &dest);
            continue;
        }
        let mut contents = fs::read(&source).expect("read template file");
        if name == "Cargo.toml" {
            let core = fixtures_dir().join("server-core");
            let core = core.to_str().expect("fixture path is UTF-8");
            let escaped = core.replace('\\', "\\\\").replace('"', "\\\"");
            let text = String::from_utf8(contents).expect("Cargo.toml is UTF-8");
            contents = text.replace("@CORE@", &escaped).into_bytes();
        }
        fs::write(&dest, contents).expect("write project file");
        let modified = fs::metadata(&source)
            .and_then(|meta| meta.modified())
            .expect("template file time");
        fs::File::options()
            .write(true)
            .open(&dest)
            .and_then(|file| file.set_modified(modified))
            .expect("set file time");
    }
}

impl TestProject {
    pub fn log_file(&self, instance: &str) -> PathBuf {
        self.state_dir().join(format!("{instance}.log"))
    }

    pub fn lock_file(&self, instance: &str) -> PathBuf {
        self.state_dir().join(format!("{instance}.lock"))
    }
}

// `cargo portguard init`: input projects from tests/fixtures/init, and
// whole-tree snapshots to prove what init did or did not touch.

/// The target dir kept under `CARGO_TARGET_TMPDIR` for the projects of one
/// slow test, so that their dependencies compile once, not at every run.
pub fn kept_target_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

impl TestProject {
    /// A copy of tests/fixtures/init/NAME (a package, or a workspace, before
    /// `init`), building into `<root>/target`, so its Rust sources may change.
    pub fn init_fixture(name: &str) -> Self {
        Self::copy_of(&format!("init/{name}"), "").own_target_dir()
    }

    /// Builds into `dir` instead (say, `kept_target_dir`): only for a project
    /// that no other test builds into `dir` at the same time.
    pub fn with_target_dir(mut self, dir: PathBuf) -> Self {
        self.target_dir = dir;
        self
    }
}

impl TestProject {
    /// Every file, folder and symlink under the temp dir (`target` folders
    /// left out), with the bytes and time of each file.
    pub fn tree(&self) -> Tree {
        Tree::of(self.dir.path())
    }
}

impl TestProject {
    /// A copy of `examples/NAME` in a temp dir (its build output and state left behind),
    /// building into `target_dir`.
    pub fn example(name: &str, target_dir: PathBuf) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("portguard-example-")
            .tempdir()
            .expect("create temp dir");
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        copy_example(&source, dir.path());
        TestProject {
            root: dir.path().to_path_buf(),
            dir,
            target_dir,
        }
    }
}

fn copy_example(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create example folder");
    for entry in fs::read_dir(from)
        .expect("read example")
        .map(|e| e.expect("read example entry"))
    {
        let name = entry.file_name();
        if name == "target" || name == ".portguard" {
            continue;
        }
        if entry.file_type().expect("file type").is_dir() {
            copy_example(&entry.path(), &to.join(&name));
        } else {
            fs::copy(entry.path(), to.join(&name)).expect("copy example file");
        }
    }
}

/// One entry of a `Tree`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    Dir,
    File {
        bytes: Vec<u8>,
        modified: std::time::SystemTime,
    },
    Symlink(PathBuf),
}

/// What a folder holds, by path relative to it; `target` folders left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree(pub std::collections::BTreeMap<PathBuf, TreeEntry>);

impl Tree {
    pub fn of(root: &Path) -> Self {
        fn walk(
            root: &Path,
            dir: &Path,
            entries: &mut std::collections::BTreeMap<PathBuf, TreeEntry>,
        ) {
            let listing =
                fs::read_dir(dir).unwrap_or_else(|err| panic!("read {}: {err}", dir.display()));
            for entry in listing {
                let path = entry.expect("read folder entry").path();
                let rel = path.strip_prefix(root).expect("below root").to_path_buf();
                let meta = fs::symlink_metadata(&path).expect("metadata");
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).expect("read symlink");
                    entries.insert(rel, TreeEntry::Symlink(target));
                } else if meta.is_dir() {
                    if rel.file_name() == Some(OsStr::new("target")) {
                        continue;
                    }
                    entries.insert(rel, TreeEntry::Dir);
                    walk(root, &path, entries);
                } else {
                    let bytes = fs::read(&path)
                        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
                    let modified = meta.modified().expect("file time");
                    entries.insert(rel, TreeEntry::File { bytes, modified });
                }
            }
        }
        let mut entries = std::collections::BTreeMap::new();
        walk(root, root, &mut entries);
        Tree(entries)
    }

    /// How `later` differs from this tree, one line a path ("added .env",
    /// "changed Cargo.toml (bytes)", "changed .env (time only)"); empty when
    /// nothing differs.
    pub fn changes_to(&self, later: &Tree) -> Vec<String> {
        let mut changes = Vec::new();
        for (path, before) in &self.0 {
            match later.0.get(path) {
                None => changes.push(format!("removed {}", path.display())),
                Some(after) if after == before => {}
                Some(TreeEntry::File {
                    bytes: after,
                    modified: _,
                }) if matches!(before, TreeEntry::File { bytes, .. } if bytes == after) => {
                    changes.push(format!("changed {} (time only)", path.display()));
                }
                Some(after) => changes.push(format!(
                    "changed {}: {} -> {}",
                    path.display(),
                    describe_entry(before),
                    describe_entry(after)
                )),
            }
        }
        for (path, after) in &later.0 {
            if !self.0.contains_key(path) {
                changes.push(format!(
                    "added {} ({})",
                    path.display(),
                    describe_entry(after)
                ));
            }
        }
        changes
    }

    /// The paths of the files in the tree, as `/`-separated strings.
    pub fn files(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, entry)| matches!(entry, TreeEntry::File { .. }))
            .map(|(path, _)| path.to_string_lossy().replace('\\', "/"))
            .collect()
    }
}

fn describe_entry(entry: &TreeEntry) -> String {
    match entry {
        TreeEntry::Dir => "folder".to_owned(),
        TreeEntry::Symlink(target) => format!("symlink to {}", target.display()),
        TreeEntry::File { bytes, .. } => match std::str::from_utf8(bytes) {
            Ok(text) => format!("file {text:?}"),
            Err(_) => format!("file of {} bytes", bytes.len()),
        },
    }
}

/// Sets the time of every file under `root` (`target` left out) to `time`,
/// so that a later rewrite shows even where it wrote the same bytes within
/// the file system's time resolution.
pub fn set_file_times(root: &Path, time: std::time::SystemTime) {
    for (rel, entry) in Tree::of(root).0 {
        if let TreeEntry::File { .. } = entry {
            fs::File::options()
                .write(true)
                .open(root.join(&rel))
                .and_then(|file| file.set_modified(time))
                .unwrap_or_else(|err| panic!("set the time of {}: {err}", rel.display()));
        }
    }
}

/// The lines of `original` that `edited` no longer has where they were (a
/// line diff's deletions, line endings included); empty when the edit only
/// inserted lines.
pub fn deleted_lines(original: &str, edited: &str) -> Vec<String> {
    similar::TextDiff::from_lines(original, edited)
        .iter_all_changes()
        .filter(|change| change.tag() == similar::ChangeTag::Delete)
        .map(|change| change.value().to_owned())
        .collect()
}

/// A unified diff from `before` (`None`: the file did not exist) to `after`,
/// with the headers and context `git diff` uses for `path`.
pub fn unified_diff(path: &str, before: Option<&str>, after: &str) -> String {
    let old = if before.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".to_owned()
    };
    similar::TextDiff::from_lines(before.unwrap_or_default(), after)
        .unified_diff()
        .context_radius(3)
        .header(&old, &format!("b/{path}"))
        .to_string()
}

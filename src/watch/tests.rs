//! Real folders, real writes, real notifications.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use super::{Changes, Spec, Watcher, start};

/// Far longer than a batch takes, short enough for a failing test to end soon.
const WAIT: Duration = Duration::from_secs(5);

/// A package folder: `src/main.rs`, a target folder, `.portguard/`, `.git/`, and a `.gitignore`.
fn project() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let root = std::fs::canonicalize(dir.path()).expect("canonical folder");
    for folder in ["src", "target/debug/deps", ".portguard", ".git/objects"] {
        std::fs::create_dir_all(root.join(folder)).expect("folder");
    }
    write(&root.join("src/main.rs"), "fn main() {}\n");
    write(
        &root.join(".gitignore"),
        "/target\nignored.txt\n/generated/\n",
    );
    (dir, root)
}

fn spec(root: &Path) -> Spec {
    Spec {
        roots: vec![root.to_owned()],
        excluded: vec![root.join("target"), root.join(".portguard")],
        ignore: vec!["*.log".to_owned(), "scratch/".to_owned()],
        debounce: Duration::from_millis(50),
    }
}

fn watch(spec: Spec) -> (Watcher, Receiver<Changes>) {
    let (sender, receiver) = mpsc::channel();
    let watcher = start(
        spec,
        Box::new(move |changes| {
            let _ = sender.send(changes);
        }),
    )
    .expect("watching starts");
    (watcher, receiver)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn next(changes: &Receiver<Changes>) -> Vec<PathBuf> {
    changes
        .recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("no change reported within {WAIT:?}: {e}"))
        .paths
}

#[test]
fn a_change_in_src_is_reported_with_its_path() {
    let (_dir, root) = project();
    let (_watcher, changes) = watch(spec(&root));
    write(&root.join("src/main.rs"), "fn main() { println!(); }\n");
    assert_eq!(next(&changes), [root.join("src/main.rs")]);
}

#[test]
fn excluded_ignored_and_unchanged_files_report_nothing() {
    let (_dir, root) = project();
    std::fs::create_dir_all(root.join("generated")).expect("folder");
    std::fs::create_dir_all(root.join("scratch")).expect("folder");
    // A target folder of a path dependency built on its own, which only its tag marks.
    std::fs::create_dir_all(root.join("vendored/target")).expect("folder");
    write(
        &root.join("vendored/target/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55",
    );
    std::fs::create_dir_all(root.join("src/nested")).expect("folder");
    write(&root.join("src/nested/.ignore"), "*.tmp\n");
    let (_watcher, changes) = watch(spec(&root));

    write(&root.join("target/debug/deps/portguard"), "binary");
    write(&root.join("target/new"), "x");
    write(&root.join(".portguard/default.json"), "{}");
    write(&root.join(".git/index"), "x");
    write(&root.join("ignored.txt"), "x");
    write(&root.join("generated/out.rs"), "x");
    write(&root.join("scratch/notes.rs"), "x");
    write(&root.join("server.log"), "x");
    write(&root.join("src/nested/a.tmp"), "x");
    write(&root.join("vendored/target/x"), "x");
    for editor_file in [".main.rs.swp", "main.rs~", ".#main.rs", "4913"] {
        write(&root.join("src").join(editor_file), "x");
    }
    // Reads and metadata are no change: a build reads every source file.
    std::fs::read(root.join("src/main.rs")).expect("read");
    let file = std::fs::File::open(root.join("src/main.rs")).expect("open");
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    drop(file);

    write(&root.join("src/lib.rs"), "pub fn f() {}\n");
    assert_eq!(next(&changes), [root.join("src/lib.rs")]);
}

#[test]
fn a_change_to_a_gitignore_takes_effect_for_later_changes() {
    let (_dir, root) = project();
    std::fs::create_dir_all(root.join("assets")).expect("folder");
    let (_watcher, changes) = watch(spec(&root));
    write(&root.join(".gitignore"), "/target\nassets/\n");
    assert_eq!(next(&changes), [root.join(".gitignore")]);
    write(&root.join("assets/logo.svg"), "<svg/>");
    write(&root.join("ignored.txt"), "no longer ignored");
    assert_eq!(next(&changes), [root.join("ignored.txt")]);
}

#[test]
fn a_change_in_a_second_root_is_reported() {
    let (_dir, root) = project();
    let (_other_dir, other) = project();
    let mut spec = spec(&root);
    spec.roots.push(other.clone());
    let (_watcher, changes) = watch(spec);
    write(&other.join("src/main.rs"), "fn main() { }\n");
    assert_eq!(next(&changes), [other.join("src/main.rs")]);
}

#[test]
fn a_file_root_counts_for_itself_alone() {
    let (_dir, root) = project();
    let (_other_dir, other) = project();
    write(&other.join("schema.sql"), "create table t ();");
    let mut spec = spec(&root);
    spec.roots.push(other.join("schema.sql"));
    let (_watcher, changes) = watch(spec);
    write(&other.join("beside.sql"), "x");
    write(&other.join("schema.sql"), "create table u ();");
    assert_eq!(next(&changes), [other.join("schema.sql")]);
}

#[test]
fn several_writes_within_the_debounce_come_as_one_batch() {
    let (_dir, root) = project();
    let mut spec = spec(&root);
    // Long enough that a loaded machine still writes the three files within it.
    spec.debounce = Duration::from_millis(400);
    let (_watcher, changes) = watch(spec);
    for name in ["a.rs", "b.rs", "main.rs"] {
        write(&root.join("src").join(name), "// saved\n");
    }
    write(&root.join("src/a.rs"), "// saved again\n");
    assert_eq!(
        next(&changes),
        [
            root.join("src/a.rs"),
            root.join("src/b.rs"),
            root.join("src/main.rs")
        ]
    );
    assert_eq!(
        changes
            .recv_timeout(Duration::from_millis(600))
            .map(|c| c.paths),
        Err(RecvTimeoutError::Timeout),
        "the writes should have come as one batch"
    );
}

#[test]
fn a_folder_created_after_start_is_watched() {
    let (_dir, root) = project();
    let (_watcher, changes) = watch(spec(&root));
    std::fs::create_dir(root.join("src/routes")).expect("folder");
    assert_eq!(next(&changes), [root.join("src/routes")]);
    write(&root.join("src/routes/users.rs"), "pub fn list() {}\n");
    assert_eq!(next(&changes), [root.join("src/routes/users.rs")]);
    // Gone and made again: watched again.
    std::fs::remove_dir_all(root.join("src/routes")).expect("remove");
    let removed = next(&changes);
    assert!(removed.contains(&root.join("src/routes")), "{removed:?}");
    std::fs::create_dir(root.join("src/routes")).expect("folder");
    assert_eq!(next(&changes), [root.join("src/routes")]);
    write(&root.join("src/routes/posts.rs"), "pub fn list() {}\n");
    assert_eq!(next(&changes), [root.join("src/routes/posts.rs")]);
}

#[test]
fn symbolic_links_are_not_followed() {
    let (_dir, root) = project();
    let (_elsewhere_dir, elsewhere) = project();
    std::os::unix::fs::symlink(elsewhere.join("src"), root.join("src/linked")).expect("symlink");
    let (_watcher, changes) = watch(spec(&root));
    write(&elsewhere.join("src/main.rs"), "fn main() { }\n");
    write(&root.join("src/main.rs"), "fn main() { }\n");
    assert_eq!(next(&changes), [root.join("src/main.rs")]);
}

#[test]
fn dropping_the_watcher_stops_callbacks() {
    let (_dir, root) = project();
    let (watcher, changes) = watch(spec(&root));
    write(&root.join("src/main.rs"), "fn main() { }\n");
    assert_eq!(next(&changes), [root.join("src/main.rs")]);
    drop(watcher);
    write(&root.join("src/main.rs"), "fn main() {}\n");
    // The callback, and with it the sender, is gone once the drop returns.
    assert_eq!(
        changes
            .recv_timeout(Duration::from_millis(300))
            .map(|c| c.paths),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn a_root_that_does_not_exist_is_an_error_naming_it() {
    let (_dir, root) = project();
    let missing = root.join("no-such-folder");
    let mut spec = spec(&root);
    spec.roots.push(missing.clone());
    let error = start(spec, Box::new(|_| {})).expect_err("a missing root is an error");
    let message = format!("{error:#}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

#[test]
fn an_invalid_pattern_is_an_error_naming_it() {
    let (_dir, root) = project();
    let mut spec = spec(&root);
    spec.ignore.push("src/a**b".to_owned());
    let error = start(spec, Box::new(|_| {})).expect_err("a bad glob is an error");
    assert!(format!("{error:#}").contains("`src/a**b`"), "{error:#}");
}

#[test]
fn changes_are_described_relative_to_the_base() {
    let base = Path::new("/p");
    let changes = |paths: &[&str]| Changes {
        paths: paths.iter().map(PathBuf::from).collect(),
    };
    assert_eq!(
        changes(&["/p/src/routes.rs"]).describe(base),
        "src/routes.rs"
    );
    assert_eq!(
        changes(&["/p/src/a.rs", "/dep/lib.rs"]).describe(base),
        "src/a.rs and /dep/lib.rs"
    );
    assert_eq!(
        changes(&["/p/src/a.rs", "/p/src/b.rs", "/p/src/c.rs"]).describe(base),
        "src/a.rs and 2 more files"
    );
    assert_eq!(changes(&["/p"]).describe(base), "/p");
}

/// A package whose table sets the watch keys, loaded as `run` loads it.
fn loaded(table: &str) -> (tempfile::TempDir, PathBuf, crate::config::Loaded) {
    let (dir, root) = project();
    write(
        &root.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [package.metadata.portguard]\n{table}\n"
        ),
    );
    std::fs::create_dir_all(root.join("schema")).expect("folder");
    let vars = |name: &str| (name == "CARGO").then(|| std::env::var_os(name)).flatten();
    let loaded = crate::config::load(
        &root,
        &vars,
        None,
        None,
        crate::config::Flags::default(),
        None,
    )
    .expect("the project loads");
    (dir, root, loaded)
}

#[test]
fn the_spec_of_a_project_has_its_folder_watch_paths_and_keys() {
    let (_dir, root, loaded) =
        loaded("watch-paths = [\"schema\"]\nwatch-ignore = [\"*.tmp\"]\nwatch-debounce-ms = 250");
    let state = root.join(".portguard");
    let spec = super::spec(&loaded, crate::project::Features::default(), &state).expect("the spec");
    assert_eq!(spec.roots, [root.clone(), root.join("schema")]);
    assert_eq!(
        spec.excluded,
        [loaded.project.target_directory.clone(), state]
    );
    assert_eq!(spec.ignore, ["*.tmp"]);
    assert_eq!(spec.debounce, Duration::from_millis(250));
}

#[test]
fn a_watch_path_that_does_not_exist_is_bad_input_naming_it() {
    let (_dir, root, loaded) = loaded("watch-paths = [\"schema\", \"../nowhere\"]");
    let error = super::spec(&loaded, crate::project::Features::default(), &root)
        .expect_err("a missing watch path is bad input");
    assert!(
        error.0.contains("../nowhere") && error.0.contains("[package.metadata.portguard]"),
        "{}",
        error.0
    );
}

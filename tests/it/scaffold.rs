//! `cargo portguard init` on copies of the projects in tests/fixtures/init: what it writes
//! (compared with the golden files in tests/it/snapshots/init, which
//! `SNAPSHOTS=overwrite cargo test --test scaffold` rewrites), what it keeps byte for byte,
//! what it prints, and that a failure writes nothing. Nothing here builds or starts a server:
//! `tests/it/scaffold_run.rs` does.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::support::{
    COMMAND_TIMEOUT, EXIT_TIMEOUT, Finished, TestProject, Tree, cargo_bin, deleted_lines,
    run_within, set_file_times, unified_diff,
};
use snapbox::{Data, assert_data_eq, file};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The default fallback ports, as `.env` spells them.
const FALLBACKS_ENV: &str = "5001,5002,5003,5004,5005,3000,3001,8000,8001";

/// Panics with the whole output unless `run` exited with `code`.
fn assert_exit(run: &Finished, code: i32) {
    assert_eq!(run.code(), Some(code), "{}", run.describe());
}

/// The glue with its version header made stable: the crate version is checked here, once,
/// and the golden files say `[VERSION]`.
fn normalized_glue(text: &str) -> String {
    let header = format!("(portguard {VERSION})");
    assert_eq!(
        text.matches(&header).count(),
        1,
        "the glue names the portguard version that wrote it once, as {header}:\n{text}"
    );
    text.replacen(&header, "(portguard [VERSION])", 1)
}

/// `init ARGS` on a fresh copy of the fixture `name`, which must succeed and print nothing on
/// stdout; returns the project, Cargo.toml as it was, and the run.
fn init_fresh(name: &str, args: &[&str]) -> (TestProject, String, Finished) {
    let project = TestProject::init_fixture(name);
    let manifest = project.read_file("Cargo.toml");
    let run = project.init(args);
    assert_exit(&run, 0);
    assert_eq!(run.stdout, "", "init writes nothing on stdout");
    (project, manifest, run)
}

/// The run's stderr lines that start with `prefix`, leading spaces ignored.
fn lines_starting<'a>(run: &'a Finished, prefix: &str) -> Vec<&'a str> {
    run.stderr
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with(prefix))
        .collect()
}

/// "added PATH", "changed PATH" or "removed PATH", from a line of `Tree::changes_to`.
fn what_changed(change: &str) -> String {
    let mut words = change.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default().trim_end_matches(':');
    format!("{verb} {path}")
}

/// Parses a manifest, panicking with its text if it is not TOML.
fn parse_toml(text: &str) -> toml_edit::DocumentMut {
    text.parse()
        .unwrap_or_else(|err| panic!("not valid TOML ({err}):\n{text}"))
}

/// `[package.metadata.portguard]` as cargo itself reads it from the package `name` in the
/// project's workspace (`cargo metadata --no-deps`).
fn metadata_as_cargo_reads_it(project: &TestProject, name: &str) -> serde_json::Value {
    let run = run_within(
        project.command(
            cargo_bin(),
            &["metadata", "--no-deps", "--format-version", "1"],
        ),
        COMMAND_TIMEOUT,
    );
    assert_exit(&run, 0);
    let metadata: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let package = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|package| package["name"] == name)
        .unwrap_or_else(|| panic!("no package {name} in {metadata}"));
    package["metadata"].clone()
}

/// The six keys init adds to a fresh package, with the seed's defaults.
fn default_table() -> serde_json::Value {
    serde_json::json!({
        "preferred-port": 5000,
        "fallback-ports": [5001, 5002, 5003, 5004, 5005, 3000, 3001, 8000, 8001],
        "max-attempts": 10,
        "check-timeout-ms": 1000,
        "handoff": "socket",
        "shutdown-timeout-ms": 10000,
    })
}

// ---------------------------------------------------------------------------
// 1. The glue and the metadata table, per framework.

/// `init --framework FRAMEWORK` on the plain package: the glue, the Cargo.toml diff and what
/// init prints are the golden files.
fn framework_snapshots(framework: &str, glue: Data, stderr: Data) {
    let (project, manifest, run) = init_fresh("plain", &["--framework", framework]);
    assert_data_eq!(
        normalized_glue(&project.read_file("src/portguard.rs")),
        glue.raw()
    );
    assert_data_eq!(
        unified_diff(
            "Cargo.toml",
            Some(&manifest),
            &project.read_file("Cargo.toml")
        ),
        file!["snapshots/init/plain-Cargo.toml.diff"].raw()
    );
    assert_data_eq!(run.stderr, stderr.raw());
}

#[test]
fn std_glue_and_metadata_match_the_golden_files() {
    framework_snapshots(
        "std",
        file!["snapshots/init/std-glue.rs"],
        file!["snapshots/init/std-stderr.txt"],
    );
}

#[test]
fn tokio_glue_and_metadata_match_the_golden_files() {
    framework_snapshots(
        "tokio",
        file!["snapshots/init/tokio-glue.rs"],
        file!["snapshots/init/tokio-stderr.txt"],
    );
}

#[test]
fn axum_glue_and_metadata_match_the_golden_files() {
    framework_snapshots(
        "axum",
        file!["snapshots/init/axum-glue.rs"],
        file!["snapshots/init/axum-stderr.txt"],
    );
}

#[test]
fn actix_web_glue_and_metadata_match_the_golden_files() {
    framework_snapshots(
        "actix-web",
        file!["snapshots/init/actix-web-glue.rs"],
        file!["snapshots/init/actix-web-stderr.txt"],
    );
}

/// Without `--framework`, a dependency line chooses: the glue is the one `--framework` gives.
fn detected(fixture: &str, framework: &str, glue: Data) -> (TestProject, String, Finished) {
    let (project, manifest, run) = init_fresh(fixture, &[]);
    assert_eq!(
        lines_starting(&run, "Creating src/portguard.rs"),
        [format!(
            "Creating src/portguard.rs: {framework} startup glue"
        )],
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.contains(&format!("({framework} glue)")),
        "{}",
        run.describe()
    );
    assert_data_eq!(
        normalized_glue(&project.read_file("src/portguard.rs")),
        glue.raw()
    );
    (project, manifest, run)
}

#[test]
fn axum_is_detected_from_a_dependency_line() {
    let (project, manifest, _) = detected("axum-app", "axum", file!["snapshots/init/axum-glue.rs"]);
    assert_data_eq!(
        unified_diff(
            "Cargo.toml",
            Some(&manifest),
            &project.read_file("Cargo.toml")
        ),
        file!["snapshots/init/axum-app-Cargo.toml.diff"].raw()
    );
}

#[test]
fn tokio_is_detected_from_a_dependency_line() {
    detected("tokio", "tokio", file!["snapshots/init/tokio-glue.rs"]);
}

#[test]
fn actix_web_is_detected_from_a_dependency_line() {
    detected(
        "actix-web",
        "actix-web",
        file!["snapshots/init/actix-web-glue.rs"],
    );
}

/// tokio only under `[dev-dependencies]` (for the tests) is not the server's framework: tokio
/// glue would not even compile in the server, which cannot `use tokio`.
#[test]
fn a_dev_dependency_does_not_choose_the_framework() {
    detected("dev-tokio", "std", file!["snapshots/init/std-glue.rs"]);
}

// ---------------------------------------------------------------------------
// 2. A hand-formatted Cargo.toml keeps every byte.

#[test]
fn an_odd_manifest_keeps_every_original_line() {
    let (project, manifest, run) = init_fresh("odd-manifest", &[]);
    let edited = project.read_file("Cargo.toml");
    assert_eq!(
        deleted_lines(&manifest, &edited),
        Vec::<String>::new(),
        "init may only insert lines into Cargo.toml; it now reads:\n{edited}"
    );
    assert_data_eq!(
        unified_diff("Cargo.toml", Some(&manifest), &edited),
        file!["snapshots/init/odd-manifest-Cargo.toml.diff"].raw()
    );
    assert_eq!(
        lines_starting(&run, "Updating Cargo.toml"),
        [
            "Updating Cargo.toml: [package.metadata.portguard] preferred-port, fallback-ports, \
          max-attempts, check-timeout-ms, handoff, shutdown-timeout-ms"
        ]
    );

    // One new table, not a second `[package.metadata]`.
    assert_eq!(edited.matches("[package.metadata.portguard]").count(), 1);
    assert!(!edited.contains("[package.metadata]"), "{edited}");
    let doc = parse_toml(&edited);
    let table = doc["package"]["metadata"]["portguard"]
        .as_table()
        .expect("a [package.metadata.portguard] table");
    assert_eq!(table["preferred-port"].as_integer(), Some(5000));
    assert_eq!(
        table["fallback-ports"].as_array().map(|ports| ports
            .iter()
            .filter_map(toml_edit::Value::as_integer)
            .collect::<Vec<_>>()),
        Some(vec![5001, 5002, 5003, 5004, 5005, 3000, 3001, 8000, 8001])
    );
    assert_eq!(table["max-attempts"].as_integer(), Some(10));
    assert_eq!(table["check-timeout-ms"].as_integer(), Some(1000));
    assert_eq!(table["handoff"].as_str(), Some("socket"));
    assert_eq!(table["shutdown-timeout-ms"].as_integer(), Some(10000));

    // cargo reads the same, and the user's metadata (dotted keys and a table) beside it.
    let metadata = metadata_as_cargo_reads_it(&project, "odd-server");
    assert_eq!(metadata["portguard"], default_table(), "{metadata}");
    assert_eq!(metadata["other"]["tool"], "x", "{metadata}");
    assert_eq!(
        metadata["other"]["nested"]["b"]["c"],
        serde_json::json!([1, 2, 3]),
        "{metadata}"
    );
    assert_eq!(metadata["docs"]["rs"]["all-features"], true, "{metadata}");

    let again = project.init(&[]);
    assert_exit(&again, 0);
    assert_eq!(project.read_file("Cargo.toml"), edited);
}

/// A Cargo.toml with Windows line endings: init inserts its table and changes no other byte,
/// so every original line keeps its `\r\n`.
#[test]
fn a_crlf_manifest_keeps_its_line_endings() {
    let project = TestProject::init_fixture("odd-manifest");
    let manifest = project.read_file("Cargo.toml").replace('\n', "\r\n");
    project.write_file("Cargo.toml", &manifest);
    let run = project.init(&[]);
    assert_exit(&run, 0);
    let edited = project.read_file("Cargo.toml");
    let rewritten = deleted_lines(&manifest, &edited);
    assert!(
        rewritten.is_empty(),
        "init may only insert lines into Cargo.toml, but {} of its {} lines changed, such as \
         {:?}; it now reads:\n{edited:?}",
        rewritten.len(),
        manifest.lines().count(),
        &rewritten[..rewritten.len().min(2)],
    );
    assert!(
        !edited.replace("\r\n", "").contains('\n'),
        "the inserted lines end in \\r\\n like the rest: {edited:?}"
    );
}

/// Metadata written inline: `portguard = { ... }` under `[package.metadata]`, or
/// `metadata = { ... }` in `[package]`. The keys init adds must leave Cargo.toml valid TOML
/// that cargo reads, with the user's values kept (a `# comment` inside an inline table is not
/// TOML, nor is a line break).
#[test]
fn inline_metadata_tables_stay_valid_toml() {
    for (inline, user_key, user_value) in [
        (
            "\n[package.metadata]\nportguard = { preferred-port = 6000 }  # mine\n",
            "/portguard/preferred-port",
            serde_json::json!(6000),
        ),
        ("metadata = { other = 1 }\n", "/other", serde_json::json!(1)),
    ] {
        let project = TestProject::init_fixture("plain");
        let manifest = project
            .read_file("Cargo.toml")
            .replace("\n[dependencies]\n", &format!("{inline}\n[dependencies]\n"));
        project.write_file("Cargo.toml", &manifest);
        let run = project.init(&[]);
        assert_exit(&run, 0);
        let edited = project.read_file("Cargo.toml");
        if let Err(err) = edited.parse::<toml_edit::DocumentMut>() {
            panic!("init made Cargo.toml invalid with {inline:?} ({err}):\n{edited}");
        }
        let metadata = metadata_as_cargo_reads_it(&project, "plain-server");
        assert_eq!(metadata.pointer(user_key), Some(&user_value), "{metadata}");
        assert_eq!(
            metadata["portguard"]["handoff"], "socket",
            "the table is added: {metadata}"
        );
        let again = project.init(&[]);
        assert_exit(&again, 0);
        assert!(
            again.stderr.contains("nothing to do"),
            "{}",
            again.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Idempotency.

#[test]
fn a_second_run_changes_no_byte_and_says_so() {
    let project = TestProject::init_fixture("plain");
    project.write_file(".gitignore", "/target\n");
    project.write_file(".env", "DATABASE_URL=postgres://localhost/app\n");
    assert_exit(&project.init(&["--build-rs"]), 0);
    // Old times, so that a rewrite of the same bytes shows too.
    set_file_times(
        project.dir.path(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
    );
    let before = project.tree();
    let written = before.files();
    for file in [
        "Cargo.toml",
        ".env",
        ".env.example",
        ".cargo/config.toml",
        ".gitignore",
        "src/portguard.rs",
        "build.rs",
        "portguard_build.rs",
    ] {
        assert!(
            written.iter().any(|path| path == file),
            "{file}: {written:?}"
        );
    }

    let nothing = "    Finished nothing to do: portguard is already set up in `plain-server`\n";
    for args in [
        &["--build-rs"][..],
        &[],
        &["--framework", "std"],
        &["--force", "--build-rs"],
    ] {
        let again = project.init(args);
        assert_exit(&again, 0);
        assert_eq!(again.stderr, nothing, "init {args:?}: {}", again.describe());
        assert_eq!(again.stdout, "", "init {args:?}");
        assert_eq!(
            before.changes_to(&project.tree()),
            Vec::<String>::new(),
            "init {args:?} changed files"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. --dry-run.

#[test]
fn dry_run_prints_every_change_as_a_diff_and_writes_nothing() {
    let files = [
        "Cargo.toml",
        ".env.example",
        ".env",
        ".cargo/config.toml",
        ".gitignore",
        "src/portguard.rs",
        "portguard_build.rs",
        "build.rs",
    ];
    let dry = TestProject::init_fixture("plain");
    let real = TestProject::init_fixture("plain");
    for project in [&dry, &real] {
        project.write_file(".gitignore", "/target\n");
    }

    let before = dry.tree();
    let run = dry.init(&["--dry-run", "--build-rs"]);
    assert_exit(&run, 0);
    assert_eq!(
        before.changes_to(&dry.tree()),
        Vec::<String>::new(),
        "--dry-run wrote files"
    );
    assert_eq!(
        run.stderr,
        "    Finished dry run: 8 files would change; nothing was written\n"
    );
    for (old, new) in [
        ("--- a/Cargo.toml", "+++ b/Cargo.toml"),
        ("--- /dev/null", "+++ b/.env.example"),
        ("--- /dev/null", "+++ b/.env"),
        ("--- /dev/null", "+++ b/.cargo/config.toml"),
        ("--- a/.gitignore", "+++ b/.gitignore"),
        ("--- /dev/null", "+++ b/src/portguard.rs"),
        ("--- /dev/null", "+++ b/portguard_build.rs"),
        ("--- /dev/null", "+++ b/build.rs"),
    ] {
        assert!(
            run.stdout.contains(&format!("{old}\n{new}\n")),
            "no {old} / {new} in the dry run:\n{}",
            run.stdout
        );
    }

    // The diffs are exactly what a real run then does, file by file, and nothing else.
    let originals: Vec<Option<String>> = files
        .iter()
        .map(|file| std::fs::read_to_string(real.root.join(file)).ok())
        .collect();
    assert_exit(&real.init(&["--build-rs"]), 0);
    let mut length = 0;
    for (file, original) in files.iter().zip(&originals) {
        let diff = unified_diff(file, original.as_deref(), &real.read_file(file));
        assert!(
            run.stdout.contains(&diff),
            "the dry run's diff of {file} is not what a real run does:\n{diff}\n\
             --- dry run ---\n{}",
            run.stdout
        );
        length += diff.len();
    }
    assert_eq!(run.stdout.len(), length, "{}", run.stdout);
}

// ---------------------------------------------------------------------------
// 5. Aliases.

#[test]
fn a_conflicting_alias_is_left_alone_with_a_warning() {
    let project = TestProject::init_fixture("plain");
    let config = "# my aliases\n[alias]\nstop = \"run --bin stopper\"\n\
                  status = [\"portguard\", \"status\"]  # the same command, as an array\n";
    project.write_file(".cargo/config.toml", config);
    let run = project.init(&[]);
    assert_exit(&run, 0);

    let warnings = lines_starting(&run, "warning:");
    assert_eq!(warnings.len(), 1, "{}", run.describe());
    let warning = warnings[0];
    for part in [
        "alias `stop` in `",
        ".cargo/config.toml` already means \"run --bin stopper\"; left alone",
        "`cargo portguard stop`",
    ] {
        assert!(warning.contains(part), "{part:?} in {warning:?}");
    }
    assert_eq!(
        project.read_file(".cargo/config.toml"),
        format!("{config}dev-safe = \"serve-safe\"\nforce-start = \"serve-safe --force\"\n")
    );
    assert_eq!(
        lines_starting(&run, "Updating .cargo/config.toml"),
        ["Updating .cargo/config.toml: aliases dev-safe, force-start"]
    );

    // Still left alone, still said, and nothing else to do.
    let again = project.init(&[]);
    assert_exit(&again, 0);
    assert_eq!(lines_starting(&again, "warning:"), [warning]);
    assert!(
        again.stderr.contains("nothing to do"),
        "{}",
        again.describe()
    );
}

// ---------------------------------------------------------------------------
// 6. .env and .env.example.

const USER_ENV: &str = "# local settings\nPORT=7000\nDATABASE_URL=postgres://localhost/app\n";

#[test]
fn env_values_are_kept_and_missing_keys_added_commented_out() {
    use std::os::unix::fs::PermissionsExt as _;

    let project = TestProject::init_fixture("plain");
    project.write_file(".env", USER_ENV);
    // Secrets: only the owner may read it, and so it stays.
    let env = project.root.join(".env");
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_exit(&project.init(&[]), 0);
    let mode = std::fs::metadata(&env)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    assert_eq!(
        project.read_file(".env"),
        format!(
            "{USER_ENV}\n\
             # portguard: uncomment to override [package.metadata.portguard] on this machine.\n\
             # FALLBACK_PORTS={FALLBACKS_ENV}  # tried in order when it is busy\n\
             # MAX_PORT_ATTEMPTS=10  # candidates tried at most\n\
             # PORT_CHECK_TIMEOUT=1000  # milliseconds for each check or probe\n"
        )
    );
    assert_eq!(
        project.read_file(".env.example"),
        format!(
            "# portguard reads these from `.env` (they override [package.metadata.portguard]).\n\
             PORT=5000  # first port tried\n\
             FALLBACK_PORTS={FALLBACKS_ENV}  # tried in order when it is busy\n\
             MAX_PORT_ATTEMPTS=10  # candidates tried at most\n\
             PORT_CHECK_TIMEOUT=1000  # milliseconds for each check or probe\n"
        )
    );
}

/// The `Updating .env:` line names the keys init added, as the aliases line does: PORT was
/// there already and is not touched.
#[test]
fn the_env_summary_names_only_the_keys_added() {
    let project = TestProject::init_fixture("plain");
    project.write_file(".env", USER_ENV);
    let run = project.init(&[]);
    assert_exit(&run, 0);
    assert_eq!(
        lines_starting(&run, "Updating .env"),
        ["Updating .env: FALLBACK_PORTS, MAX_PORT_ATTEMPTS, PORT_CHECK_TIMEOUT"],
        "{}",
        run.describe()
    );
}

/// A `.env` that is a symlink (to a file shared by several projects, say) stays that symlink:
/// writing the new text by renaming a temporary file over the link would replace the link
/// with a copy, silently cutting the project off from the shared file.
#[test]
fn a_symlinked_env_file_stays_a_symlink() {
    let project = TestProject::init_fixture("plain");
    project.write_file("shared/env", USER_ENV);
    std::os::unix::fs::symlink("shared/env", project.root.join(".env")).expect("symlink");
    let run = project.init(&[]);
    assert_exit(&run, 0);
    let link = std::fs::read_link(project.root.join(".env"));
    assert_eq!(
        link.ok(),
        Some("shared/env".into()),
        ".env is no longer the symlink it was:\n{}",
        run.describe()
    );
    assert!(project.read_file("shared/env").starts_with(USER_ENV));
}

// ---------------------------------------------------------------------------
// 7. Workspaces.

#[test]
fn in_a_workspace_init_needs_a_package_and_edits_only_that_member() {
    let project = TestProject::init_fixture("workspace");
    let before = project.tree();

    let run = project.init(&[]);
    assert_exit(&run, 2);
    assert!(
        run.stderr.contains("(api, worker)") && run.stderr.contains("`-p NAME`"),
        "{}",
        run.describe()
    );
    assert_eq!(before.changes_to(&project.tree()), Vec::<String>::new());

    let workspace_manifest = project.read_file("Cargo.toml");
    let api_manifest = project.read_file("api/Cargo.toml");
    let run = project.init(&["-p", "api"]);
    assert_exit(&run, 0);
    let changes = before.changes_to(&project.tree());
    let mut paths: Vec<String> = changes.iter().map(|change| what_changed(change)).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "added .cargo",
            "added .cargo/config.toml",
            "added .gitignore",
            "added api/.env",
            "added api/.env.example",
            "added api/src/portguard.rs",
            "changed api/Cargo.toml",
        ],
        "aliases and .gitignore at the workspace root, the rest in api: {changes:#?}"
    );
    assert_eq!(project.read_file("Cargo.toml"), workspace_manifest);

    let edited = project.read_file("api/Cargo.toml");
    assert_eq!(deleted_lines(&api_manifest, &edited), Vec::<String>::new());
    assert_eq!(
        lines_starting(&run, "Updating api/Cargo.toml"),
        [
            "Updating api/Cargo.toml: [package.metadata.portguard] max-attempts, \
          check-timeout-ms, handoff, shutdown-timeout-ms"
        ]
    );
    // The workspace's preferred port is not shadowed, and is the one the other files use: the
    // candidate keys are one group per table, so none is written beside the workspace's.
    let mut expected = default_table();
    let table = expected.as_object_mut().expect("an object");
    table.remove("preferred-port");
    table.remove("fallback-ports");
    assert_eq!(
        metadata_as_cargo_reads_it(&project, "api")["portguard"],
        expected
    );
    assert!(
        project
            .read_file("api/.env.example")
            .contains("\nPORT=6100  # first port tried\n")
    );
    assert!(
        project
            .read_file("api/src/portguard.rs")
            .contains("    None => 6100,\n")
    );
    assert_eq!(
        project.read_file(".cargo/config.toml"),
        "[alias]\ndev-safe = \"serve-safe\"\nforce-start = \"serve-safe --force\"\n\
         stop = \"portguard stop\"\nstatus = \"portguard status\"\n"
    );

    // From inside the other member, that member is the one set up; the root files are done.
    let mut in_worker = project.portguard(&["init"]);
    in_worker.current_dir(project.root.join("worker"));
    let run = run_within(in_worker, COMMAND_TIMEOUT);
    assert_exit(&run, 0);
    assert!(
        run.stderr
            .contains("Finished portguard is set up in `worker`"),
        "{}",
        run.describe()
    );
    assert!(
        project
            .read_file("worker/Cargo.toml")
            .contains("[package.metadata.portguard]")
    );
    assert!(lines_starting(&run, "Updating .cargo").is_empty());
    assert!(lines_starting(&run, "Creating .cargo").is_empty());
}

// ---------------------------------------------------------------------------
// 8. Existing files: the glue, build.rs.

#[test]
fn an_existing_glue_file_is_left_alone_until_force() {
    let project = TestProject::init_fixture("plain");
    let mine = "// my own glue\n";
    project.write_file("src/portguard.rs", mine);
    let run = project.init(&[]);
    assert_exit(&run, 0);
    assert_eq!(project.read_file("src/portguard.rs"), mine);
    let notes = lines_starting(&run, "note:");
    assert!(
        notes.iter().any(|note| note
            .ends_with("src/portguard.rs` exists and was left alone; `--force` regenerates it")),
        "{}",
        run.describe()
    );
    assert!(lines_starting(&run, "Creating src/portguard.rs").is_empty());

    let before = project.tree();
    let forced = project.init(&["--force"]);
    assert_exit(&forced, 0);
    assert_eq!(
        lines_starting(&forced, "Updating"),
        ["Updating src/portguard.rs: std startup glue"]
    );
    assert_data_eq!(
        normalized_glue(&project.read_file("src/portguard.rs")),
        file!["snapshots/init/std-glue.rs"].raw()
    );
    let changes = before.changes_to(&project.tree());
    assert_eq!(
        changes
            .iter()
            .map(|change| what_changed(change))
            .collect::<Vec<_>>(),
        ["changed src/portguard.rs"],
        "{changes:#?}"
    );
}

#[test]
fn build_rs_is_created_with_its_module_and_build_dependency() {
    let (project, manifest, run) = init_fresh("plain", &["--build-rs"]);
    assert_data_eq!(
        project.read_file("build.rs"),
        file!["snapshots/init/build.rs"].raw()
    );
    assert_data_eq!(
        project.read_file("portguard_build.rs"),
        file!["snapshots/init/portguard_build.rs"].raw()
    );
    let edited = project.read_file("Cargo.toml");
    assert_eq!(deleted_lines(&manifest, &edited), Vec::<String>::new());
    assert!(
        edited.ends_with("\n[build-dependencies]\ntoml = \"1\"\n"),
        "{edited}"
    );
    assert_eq!(
        lines_starting(&run, "Creating build.rs"),
        ["Creating build.rs: runs portguard_build.rs"]
    );
}

#[test]
fn an_existing_build_rs_is_never_overwritten() {
    let project = TestProject::init_fixture("plain");
    let mine = "fn main() {\n    println!(\"cargo:rerun-if-changed=build.rs\");\n}\n";
    project.write_file("build.rs", mine);
    let include_note = |run: &Finished| {
        let lines: Vec<&str> = run.stderr.lines().collect();
        lines.windows(2).any(|pair| {
            pair[0].starts_with("note: `")
                && pair[0].ends_with(
                    "build.rs` exists and was left alone: add this line at the start of its `fn main()`:",
                )
                && pair[1] == "    include!(\"portguard_build.rs\");"
        })
    };

    let run = project.init(&["--build-rs"]);
    assert_exit(&run, 0);
    assert_eq!(project.read_file("build.rs"), mine);
    assert!(include_note(&run), "{}", run.describe());
    assert_data_eq!(
        project.read_file("portguard_build.rs"),
        file!["snapshots/init/portguard_build.rs"].raw()
    );
    assert!(
        parse_toml(&project.read_file("Cargo.toml"))["build-dependencies"]["toml"].as_str()
            == Some("1")
    );

    let forced = project.init(&["--build-rs", "--force"]);
    assert_exit(&forced, 0);
    assert_eq!(project.read_file("build.rs"), mine);
    assert!(include_note(&forced), "{}", forced.describe());

    // Once the user has added the line, there is nothing more to say.
    let with_line = "fn main() {\n    include!(\"portguard_build.rs\");\n    \
                     println!(\"cargo:rerun-if-changed=build.rs\");\n}\n";
    project.write_file("build.rs", with_line);
    let done = project.init(&["--build-rs"]);
    assert_exit(&done, 0);
    assert!(!include_note(&done), "{}", done.describe());
    assert_eq!(project.read_file("build.rs"), with_line);
}

// ---------------------------------------------------------------------------
// 9. All or nothing.

/// A project with files of its own that init would update, and the tree before `init`.
fn project_with_user_files() -> (TestProject, Tree) {
    let project = TestProject::init_fixture("plain");
    project.write_file(".env", USER_ENV);
    project.write_file(".gitignore", "/target\n");
    let tree = project.tree();
    (project, tree)
}

/// `init ARGS` fails, naming `path` (relative to the root) in an error, and leaves the tree as
/// it was: no file changed, nothing created, no temporary file left.
fn assert_fails_cleanly(project: &TestProject, before: &Tree, args: &[&str], path: &str) {
    let run = project.init(args);
    assert_exit(&run, 1);
    let shown = project.root.join(path);
    let errors = lines_starting(&run, "error:");
    assert!(
        errors
            .iter()
            .any(|line| line.contains(&format!("`{}`", shown.display()))),
        "an error naming {}:\n{}",
        shown.display(),
        run.describe()
    );
    assert_eq!(
        before.changes_to(&project.tree()),
        Vec::<String>::new(),
        "a failed init changed files:\n{}",
        run.describe()
    );
}

#[test]
fn cargo_dir_that_is_a_file_fails_before_anything_is_written() {
    let (project, _) = project_with_user_files();
    project.write_file(".cargo", "");
    let before = project.tree();
    assert_fails_cleanly(&project, &before, &[], ".cargo/config.toml");
}

/// `.cargo` is a dangling symlink: reading `.cargo/config.toml` finds no file, and only
/// creating the folder fails, after Cargo.toml, `.env.example` and `.env` were staged.
#[test]
fn a_failure_while_writing_leaves_every_file_as_it_was() {
    let (project, _) = project_with_user_files();
    std::os::unix::fs::symlink("nowhere", project.root.join(".cargo")).expect("symlink");
    let before = project.tree();
    assert_fails_cleanly(&project, &before, &["--build-rs"], ".cargo");
}

/// The glue's folder cannot be created, after `.cargo/` was: the new folder goes again.
#[test]
fn folders_created_before_a_failure_are_removed() {
    let (project, _) = project_with_user_files();
    std::os::unix::fs::symlink("nowhere", project.root.join("src/gen")).expect("symlink");
    let before = project.tree();
    assert_fails_cleanly(
        &project,
        &before,
        &["--glue-path", "src/gen/portguard.rs"],
        "src/gen",
    );
}

/// A read-only `.cargo/` (mode 555). Root writes there all the same, so where the tests run
/// as root this checks only that the mode stops writes; elsewhere init must fail cleanly.
#[test]
fn a_read_only_cargo_dir_fails_cleanly() {
    use std::os::unix::fs::PermissionsExt as _;

    let (project, _) = project_with_user_files();
    let cargo_dir = project.root.join(".cargo");
    std::fs::create_dir(&cargo_dir).expect("mkdir .cargo");
    std::fs::set_permissions(&cargo_dir, std::fs::Permissions::from_mode(0o555))
        .expect("chmod 555");
    let probe = cargo_dir.join("probe");
    if std::fs::write(&probe, "").is_ok() {
        std::fs::remove_file(&probe).expect("remove the probe");
        eprintln!("a read-only folder stops no write here (root): covered by the other failures");
        return;
    }
    let before = project.tree();
    assert_fails_cleanly(&project, &before, &[], ".cargo/config.toml");
    // So that the temp dir can be removed.
    std::fs::set_permissions(&cargo_dir, std::fs::Permissions::from_mode(0o755))
        .expect("chmod 755");
}

// ---------------------------------------------------------------------------
// 10. Symbolic links out of the project, and files that are not files.

/// One file init writes, or a folder on the way to it, made a symbolic link to `target` in a
/// folder outside the project.
struct LinkOut {
    /// The link, relative to the project root.
    link: &'static str,
    /// Where it leads, relative to the outside folder; `prepare` puts what is there.
    target: &'static str,
    prepare: fn(&TestProject, &Path),
    args: &'static [&'static str],
    /// The file (relative to the outside folder) `--force` writes through the link, and a line
    /// that shows it did.
    written: &'static str,
    marker: &'static str,
}

/// Moves the project's `name` to `dest` in the outside folder, where the link will lead.
fn move_out(project: &TestProject, outside: &Path, name: &str, dest: &str) {
    std::fs::rename(project.root.join(name), outside.join(dest)).expect("move out");
}

fn write_outside(outside: &Path, rel: &str, text: &str) {
    let path = outside.join(rel);
    std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
    std::fs::write(path, text).expect("write outside");
}

/// Every file init writes, each as a link out; and `.cargo` and `src`, the folders it writes in.
/// The glue and the build files are only created, never changed: their links lead to a file
/// that does not exist yet.
const LINKS_OUT: &[LinkOut] = &[
    LinkOut {
        link: "Cargo.toml",
        target: "Cargo.toml",
        prepare: |project, outside| move_out(project, outside, "Cargo.toml", "Cargo.toml"),
        args: &[],
        written: "Cargo.toml",
        marker: "[package.metadata.portguard]",
    },
    LinkOut {
        link: ".env.example",
        target: "env.example",
        prepare: |_, outside| write_outside(outside, "env.example", "PORT=5000\n"),
        args: &[],
        written: "env.example",
        marker: "FALLBACK_PORTS",
    },
    LinkOut {
        link: ".env",
        target: "shared.env",
        prepare: |_, outside| write_outside(outside, "shared.env", USER_ENV),
        args: &[],
        written: "shared.env",
        marker: "FALLBACK_PORTS",
    },
    LinkOut {
        link: ".cargo/config.toml",
        target: "config.toml",
        prepare: |project, outside| {
            std::fs::create_dir(project.root.join(".cargo")).expect("mkdir .cargo");
            write_outside(outside, "config.toml", "[alias]\nb = \"build\"\n");
        },
        args: &[],
        written: "config.toml",
        marker: "dev-safe",
    },
    LinkOut {
        link: ".cargo",
        target: "cargo-home",
        prepare: |_, outside| {
            write_outside(outside, "cargo-home/config.toml", "[net]\nretry = 3\n");
        },
        args: &[],
        written: "cargo-home/config.toml",
        marker: "dev-safe",
    },
    LinkOut {
        link: ".gitignore",
        target: ".ssh/authorized_keys",
        prepare: |_, outside| {
            write_outside(
                outside,
                ".ssh/authorized_keys",
                "ssh-ed25519 AAAAC3Nz user@host\n",
            );
        },
        args: &[],
        written: ".ssh/authorized_keys",
        marker: ".portguard/",
    },
    LinkOut {
        link: "src/portguard.rs",
        target: "glue.rs",
        prepare: |_, _| {},
        args: &[],
        written: "glue.rs",
        marker: "pub fn listener()",
    },
    LinkOut {
        link: "src",
        target: "src",
        prepare: |project, outside| move_out(project, outside, "src", "src"),
        args: &[],
        written: "src/portguard.rs",
        marker: "pub fn listener()",
    },
    LinkOut {
        link: "build.rs",
        target: "build.rs",
        prepare: |_, _| {},
        args: &["--build-rs"],
        written: "build.rs",
        marker: "include!(\"portguard_build.rs\");",
    },
    LinkOut {
        link: "portguard_build.rs",
        target: "portguard_build.rs",
        prepare: |_, _| {},
        args: &["--build-rs"],
        written: "portguard_build.rs",
        marker: "Generated by `cargo portguard init`",
    },
];

/// The plain package with `case` set up in it; the outside folder, and the link's target as
/// init must name it (every link followed).
fn with_link_out(case: &LinkOut) -> (TestProject, tempfile::TempDir, PathBuf) {
    let project = TestProject::init_fixture("plain");
    let outside = tempfile::tempdir().expect("outside folder");
    (case.prepare)(&project, outside.path());
    let target = outside.path().join(case.target);
    std::os::unix::fs::symlink(&target, project.root.join(case.link)).expect("symlink");
    let real_target = std::fs::canonicalize(outside.path())
        .expect("resolve the outside folder")
        .join(case.target);
    (project, outside, real_target)
}

fn names_the_link(run: &Finished, case: &LinkOut, target: &Path) -> bool {
    run.stderr.contains(&format!(
        "`{}` is a symbolic link to `{}`, outside the project `",
        case.link,
        target.display()
    ))
}

#[test]
fn a_link_out_of_the_project_is_refused_and_nothing_is_written() {
    for case in LINKS_OUT {
        let (project, outside, target) = with_link_out(case);
        let project_before = project.tree();
        let outside_before = Tree::of(outside.path());
        let run = project.init(case.args);
        assert_exit(&run, 2);
        assert!(
            names_the_link(&run, case, &target)
                && run
                    .stderr
                    .contains("; refusing to write through it (use --force to write anyway)"),
            "{}: the refusal names the link and its target:\n{}",
            case.link,
            run.describe()
        );
        assert_eq!(
            outside_before.changes_to(&Tree::of(outside.path())),
            Vec::<String>::new(),
            "{}: the file outside changed:\n{}",
            case.link,
            run.describe()
        );
        assert_eq!(
            project_before.changes_to(&project.tree()),
            Vec::<String>::new(),
            "{}: a refused init changed files:\n{}",
            case.link,
            run.describe()
        );
    }
}

#[test]
fn with_force_a_link_out_of_the_project_is_written_through_with_a_warning() {
    for case in LINKS_OUT {
        let (project, outside, target) = with_link_out(case);
        let mut args = vec!["--force"];
        args.extend_from_slice(case.args);
        let run = project.init(&args);
        assert_exit(&run, 0);
        assert!(
            names_the_link(&run, case, &target)
                && lines_starting(&run, "warning:")
                    .iter()
                    .any(|line| line.ends_with("; writing through it (--force)")),
            "{}: a warning names the link:\n{}",
            case.link,
            run.describe()
        );
        let written = std::fs::read_to_string(outside.path().join(case.written))
            .unwrap_or_else(|err| panic!("{}: {err}\n{}", case.written, run.describe()));
        assert!(
            written.contains(case.marker),
            "{}: not written through:\n{written}\n{}",
            case.link,
            run.describe()
        );
        assert_eq!(
            std::fs::read_link(project.root.join(case.link)).ok(),
            Some(outside.path().join(case.target)),
            "{}: is no longer the link it was",
            case.link
        );
    }
}

#[test]
fn dry_run_refuses_a_link_out_of_the_project_the_same_way() {
    let case = &LINKS_OUT[5];
    assert_eq!(case.link, ".gitignore");
    let (project, outside, target) = with_link_out(case);
    let outside_before = Tree::of(outside.path());
    let run = project.init(&["--dry-run"]);
    assert_exit(&run, 2);
    assert!(names_the_link(&run, case, &target), "{}", run.describe());
    assert_eq!(run.stdout, "", "no diff for a refused run");
    assert_eq!(
        outside_before.changes_to(&Tree::of(outside.path())),
        Vec::<String>::new()
    );
}

/// A dotfile kept as a link to a file elsewhere in the repository, and `.cargo` as a link to
/// a folder in it: both are written through, and stay links.
#[test]
fn a_link_that_stays_inside_the_project_is_written_through() {
    let project = TestProject::init_fixture("plain");
    project.write_file("dotfiles/gitignore", "/target\n");
    project.write_file("dotfiles/cargo/config.toml", "[alias]\nb = \"build\"\n");
    std::os::unix::fs::symlink("dotfiles/gitignore", project.root.join(".gitignore"))
        .expect("symlink");
    std::os::unix::fs::symlink(
        project.root.join("dotfiles/cargo"),
        project.root.join(".cargo"),
    )
    .expect("symlink");
    let run = project.init(&[]);
    assert_exit(&run, 0);
    assert_eq!(
        lines_starting(&run, "warning:"),
        Vec::<&str>::new(),
        "{}",
        run.describe()
    );
    assert_eq!(
        project.read_file("dotfiles/gitignore"),
        "/target\n# portguard's locks, pid files and logs\n.portguard/\n"
    );
    assert!(
        project
            .read_file("dotfiles/cargo/config.toml")
            .contains("dev-safe")
    );
    assert_eq!(
        std::fs::read_link(project.root.join(".gitignore")).ok(),
        Some("dotfiles/gitignore".into())
    );
    assert!(
        std::fs::symlink_metadata(project.root.join(".cargo"))
            .expect(".cargo")
            .is_symlink()
    );
}

/// A FIFO at `.gitignore`: opening it to read would wait for a writer forever. init refuses it
/// by name, within a bound (cargo metadata runs first), and leaves it a FIFO.
#[test]
fn a_fifo_at_gitignore_is_refused_without_hanging() {
    use std::os::unix::fs::FileTypeExt as _;

    let (project, _) = project_with_user_files();
    std::fs::remove_file(project.root.join(".gitignore")).expect("remove .gitignore");
    let before_fifo = project.tree();
    let fifo = project.root.join(".gitignore");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let run = run_within(project.portguard(&["init"]), EXIT_TIMEOUT);
    assert_exit(&run, 2);
    assert!(
        run.stderr.contains(&format!(
            "`{}` is a FIFO, not a regular file",
            fifo.display()
        )),
        "{}",
        run.describe()
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .expect(".gitignore")
            .file_type()
            .is_fifo()
    );
    // The tree is compared without the FIFO: reading it would hang the test instead.
    std::fs::remove_file(&fifo).expect("remove the FIFO");
    assert_eq!(
        before_fifo.changes_to(&project.tree()),
        Vec::<String>::new(),
        "{}",
        run.describe()
    );
}

#[test]
fn a_folder_or_a_huge_file_where_a_file_should_be_is_refused_by_name() {
    let (project, _) = project_with_user_files();
    std::fs::create_dir(project.root.join(".env.example")).expect("mkdir .env.example");
    let before = project.tree();
    let run = project.init(&[]);
    assert_exit(&run, 2);
    let shown = project.root.join(".env.example");
    assert!(
        run.stderr.contains(&format!(
            "`{}` is a folder, not a regular file",
            shown.display()
        )),
        "{}",
        run.describe()
    );
    assert_eq!(before.changes_to(&project.tree()), Vec::<String>::new());

    std::fs::remove_dir(&shown).expect("rmdir .env.example");
    std::fs::File::create(&shown)
        .and_then(|file| file.set_len(5 << 20))
        .expect("a 5 MiB .env.example");
    let before = project.tree();
    let run = project.init(&[]);
    assert_exit(&run, 2);
    assert!(
        run.stderr
            .contains(&format!("`{}` is larger than 4 MiB", shown.display())),
        "{}",
        run.describe()
    );
    assert_eq!(before.changes_to(&project.tree()), Vec::<String>::new());
}

//! Reading the project: `cargo metadata`'s answer is reused while the manifests and target
//! folders are unchanged, and asked for again as soon as anything it depends on changes.

use std::fs;
use std::path::{Path, PathBuf};

use crate::other_account_or_skip;
use crate::support::*;

/// A fixture copy whose `cargo` is a wrapper that logs each `cargo metadata` call, and whose
/// runtime folder (where the answer is kept) is its own.
struct Counted {
    project: TestProject,
    cargo: PathBuf,
    calls: PathBuf,
    runtime: tempfile::TempDir,
}

impl Counted {
    fn new() -> Self {
        Self::of(TestProject::fixture())
    }

    fn of(project: TestProject) -> Self {
        let tools = project.root.join("tools");
        fs::create_dir_all(&tools).expect("create tools folder");
        let calls = tools.join("metadata-calls");
        let cargo = tools.join("cargo");
        fs::write(
            &cargo,
            format!(
                "#!/bin/sh\n[ \"$1\" = metadata ] && echo call >> '{}'\nexec '{}' \"$@\"\n",
                calls.display(),
                cargo_bin().display()
            ),
        )
        .expect("write the cargo wrapper");
        fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("make the wrapper executable");
        let runtime = tempfile::tempdir().expect("create runtime folder");
        Counted {
            project,
            cargo,
            calls,
            runtime,
        }
    }

    /// `cargo portguard config --json ARGS` through the wrapper; its JSON.
    fn config(&self, args: &[&str]) -> serde_json::Value {
        let finished = self.config_run(args);
        assert_eq!(finished.code(), Some(0), "{}", finished.describe());
        serde_json::from_str(&finished.stdout)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", finished.describe()))
    }

    fn config_run(&self, args: &[&str]) -> Finished {
        let mut all = vec!["config", "--json"];
        all.extend_from_slice(args);
        self.run(self.project.portguard(&all))
    }

    fn run(&self, mut command: std::process::Command) -> Finished {
        command
            .env("CARGO", &self.cargo)
            .env("XDG_RUNTIME_DIR", self.runtime.path());
        run_within(command, COMMAND_TIMEOUT)
    }

    fn metadata_calls(&self) -> usize {
        fs::read_to_string(&self.calls).map_or(0, |text| text.lines().count())
    }

    fn cache_entries(&self) -> Vec<PathBuf> {
        let dir = self.runtime.path().join("portguard");
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| is_cache_entry(path))
                    .collect()
            })
            .unwrap_or_default();
        entries.sort();
        entries
    }
}

fn is_cache_entry(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("metadata-"))
}

fn preferred_port(json: &serde_json::Value) -> u64 {
    json["settings"]["preferred-port"]["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("no preferred port in {json}"))
}

#[test]
fn an_unchanged_project_is_read_once() {
    let counted = Counted::new();
    counted.project.set_metadata("preferred-port = 41001");
    let first = counted.config(&[]);
    let second = counted.config(&[]);
    assert_eq!(preferred_port(&first), 41001);
    assert_eq!(first, second);
    assert_eq!(
        counted.metadata_calls(),
        1,
        "the second run asked cargo again"
    );
    assert_eq!(counted.cache_entries().len(), 1);
}

#[test]
fn a_manifest_rewritten_at_once_with_the_same_size_is_read_again() {
    let counted = Counted::new();
    counted.project.set_metadata("preferred-port = 41001");
    assert_eq!(preferred_port(&counted.config(&[])), 41001);
    // Same length, same second: only the content tells the two apart.
    counted.project.set_metadata("preferred-port = 41002");
    assert_eq!(preferred_port(&counted.config(&[])), 41002);
    assert_eq!(counted.metadata_calls(), 2);
}

#[test]
fn a_new_binary_is_seen_by_the_next_start() {
    let counted = Counted::new();
    let unknown_bin = || {
        let finished = counted.run(counted.project.serve_safe(&["--bin", "nope"]));
        assert_eq!(finished.code(), Some(2), "{}", finished.describe());
        finished.stderr
    };
    assert!(
        unknown_bin().contains("binaries: fixture-server\n"),
        "{}",
        unknown_bin()
    );
    // Written directly: nothing is built here, so the shared target dir is safe.
    let extra = counted.project.root.join("src/bin/extra.rs");
    fs::create_dir_all(extra.parent().expect("a parent")).expect("create src/bin");
    fs::write(&extra, "fn main() {}\n").expect("add a binary");
    let after = unknown_bin();
    assert!(after.contains("binaries: extra, fixture-server"), "{after}");
    fs::remove_file(&extra).expect("remove the binary");
    let removed = unknown_bin();
    assert!(removed.contains("binaries: fixture-server\n"), "{removed}");
}

#[test]
fn a_corrupt_cache_entry_is_ignored_and_replaced() {
    let counted = Counted::new();
    counted.project.set_metadata("preferred-port = 41003");
    counted.config(&[]);
    let entries = counted.cache_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    fs::write(&entries[0], "{\"format\": 1, \"truncated").expect("corrupt the entry");
    assert_eq!(preferred_port(&counted.config(&[])), 41003);
    assert_eq!(counted.metadata_calls(), 2);
    let replaced = fs::read_to_string(&entries[0]).expect("entry rewritten");
    assert!(
        serde_json::from_str::<serde_json::Value>(&replaced).is_ok(),
        "{replaced}"
    );
    counted.config(&[]);
    assert_eq!(
        counted.metadata_calls(),
        2,
        "the replaced entry was not used"
    );
}

#[test]
fn a_broken_manifest_after_a_good_run_is_reported() {
    let counted = Counted::new();
    counted.config(&[]);
    counted
        .project
        .write_file("Cargo.toml", "[package\nname = \"fixture-server\"\n");
    let finished = counted.config_run(&[]);
    assert_eq!(finished.code(), Some(2), "{}", finished.describe());
    assert!(
        finished.stderr.contains("`cargo metadata` failed"),
        "{}",
        finished.describe()
    );
}

/// Rewrites the preferred port the single cache entry holds for the package, keeping its
/// fingerprint (or, with `empty_fingerprint`, emptying it): what someone who can write there
/// would do to change which project `cargo run` starts.
fn tampered_entry(entry: &Path, port: u64, empty_fingerprint: bool) -> Vec<u8> {
    let mut json: serde_json::Value =
        serde_json::from_slice(&fs::read(entry).expect("read the entry")).expect("JSON entry");
    json["metadata"]["packages"][0]["metadata"]["portguard"]["preferred-port"] = port.into();
    if empty_fingerprint {
        json["stamps"] = serde_json::json!([]);
    }
    serde_json::to_vec(&json).expect("encode the entry")
}

#[test]
fn a_cache_entry_with_an_empty_fingerprint_is_never_fresh() {
    let counted = Counted::new();
    counted.project.set_metadata("preferred-port = 41004");
    counted.config(&[]);
    let entries = counted.cache_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let tampered = tampered_entry(&entries[0], 41904, true);
    fs::write(&entries[0], tampered).expect("write the entry");
    assert_eq!(preferred_port(&counted.config(&[])), 41004);
    assert_eq!(counted.metadata_calls(), 2);
}

#[test]
fn a_cache_entry_of_another_account_is_never_read() {
    let other = other_account_or_skip!();
    let counted = Counted::new();
    counted.project.set_metadata("preferred-port = 41005");
    counted.config(&[]);
    let entries = counted.cache_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    // Planted as this user's, a tampered entry with a matching fingerprint is believed: the
    // test below is not passing by accident.
    fs::write(entry, tampered_entry(entry, 41905, false)).expect("write the entry");
    assert_eq!(preferred_port(&counted.config(&[])), 41905);
    assert_eq!(counted.metadata_calls(), 1);
    for empty_fingerprint in [false, true] {
        let tampered = tampered_entry(entry, 41905, empty_fingerprint);
        fs::remove_file(entry).expect("remove the entry");
        other.plant(entry, &tampered, 0o644);
        let calls = counted.metadata_calls();
        assert_eq!(
            preferred_port(&counted.config(&[])),
            41005,
            "empty fingerprint: {empty_fingerprint}"
        );
        assert_eq!(counted.metadata_calls(), calls + 1);
        assert_eq!(
            users::owner_of(entry),
            users::my_uid(),
            "the foreign entry is replaced by one of this user's"
        );
    }
}

#[test]
fn a_workspace_manifest_appearing_above_the_package_is_seen() {
    let counted = Counted::of(TestProject::fixture_in("pkg"));
    // The copy is a workspace of its own; without that line cargo looks above it.
    let manifest = counted.project.read_file("Cargo.toml");
    let alone = manifest.replace("\n[workspace]\n", "\n");
    assert_ne!(alone, manifest, "the fixture has a [workspace] line");
    counted.project.write_file("Cargo.toml", alone);
    counted.project.set_metadata("max-attempts = 1");
    let before = counted.config(&[]);
    assert_ne!(preferred_port(&before), 41006);
    fs::write(
        counted.project.dir.path().join("Cargo.toml"),
        "[workspace]\nmembers = [\"pkg\"]\nresolver = \"2\"\n\n\
         [workspace.metadata.portguard]\npreferred-port = 41006\n",
    )
    .expect("write the workspace manifest");
    assert_eq!(preferred_port(&counted.config(&[])), 41006);
    assert_eq!(counted.metadata_calls(), 2);
}

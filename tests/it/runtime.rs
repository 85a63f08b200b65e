//! The per-user runtime folder (`$XDG_RUNTIME_DIR/portguard`): created private, never used
//! when another account holds its name, and no obstacle when its path is long.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::other_account_or_skip;
use crate::support::users::Account;
use crate::support::*;

/// A runtime parent (`XDG_RUNTIME_DIR`) and a home folder, both fresh and this user's.
struct Env {
    xdg: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            xdg: tempfile::tempdir().expect("create XDG_RUNTIME_DIR"),
            home: tempfile::tempdir().expect("create HOME"),
        }
    }

    fn shared(&self) -> PathBuf {
        self.xdg.path().join("portguard")
    }

    fn fallback(&self) -> PathBuf {
        self.home.path().join(".cache/portguard/run")
    }

    fn apply(&self, command: &mut Command) {
        command
            .env("XDG_RUNTIME_DIR", self.xdg.path())
            .env("HOME", self.home.path());
    }
}

/// `serve-safe --detach ARGS` in `env`, which must succeed; its port and stderr.
fn detach_in(project: &TestProject, env: &Env, args: &[&str]) -> (u16, String) {
    let mut all = vec!["--detach"];
    all.extend_from_slice(args);
    let mut command = project.serve_safe(&all);
    env.apply(&mut command);
    let started = run_within(command, COMMAND_TIMEOUT);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    let port = started
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("stdout is not a port: {}", started.describe()));
    (port, started.stderr)
}

fn stop(project: &TestProject) {
    let stopped = project.run_portguard(&["stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Another account made `portguard/` (or a link of that name) first: the start goes on in the
/// private folder in the home, says whose the path is, and writes nothing into it.
fn squatted(plant: impl FnOnce(Account, &Path) -> PathBuf) {
    let other = other_account_or_skip!();
    let env = Env::new();
    let planted = plant(other, &env.shared());
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    // A failing assertion leaves the server to the project's cleanup, which kills it.
    let (port, stderr) = detach_in(&project, &env, &[]);
    let warning = stderr
        .lines()
        .find(|line| line.starts_with("warning:") && line.contains("instead"))
        .unwrap_or_else(|| panic!("no warning about the runtime folder:\n{stderr}"));
    assert!(
        warning.contains(&format!("`{}`", env.shared().display())),
        "{warning}"
    );
    assert!(warning.contains(&format!("uid {}", other.uid)), "{warning}");
    assert!(
        warning.contains(&env.fallback().display().to_string()),
        "{warning}"
    );
    assert_eq!(entries(&planted), Vec::<String>::new(), "written into");
    assert_eq!(mode_of(&env.fallback()), 0o700);
    assert!(
        entries(&env.fallback()).contains(&format!("port-{port}.lock")),
        "the reservation is in the fallback folder: {:?}",
        entries(&env.fallback())
    );
    stop(&project);
}

#[test]
fn a_folder_another_account_made_world_writable_is_not_used() {
    squatted(|other, shared| {
        other.plant_dir(shared, 0o777);
        shared.to_owned()
    });
}

#[test]
fn a_private_folder_of_another_account_is_not_used() {
    squatted(|other, shared| {
        other.plant_dir(shared, 0o755);
        shared.to_owned()
    });
}

#[test]
fn a_link_another_account_put_in_its_place_is_not_followed() {
    let target = tempfile::tempdir().expect("create the link's target");
    let target_path = target.path().to_owned();
    squatted(move |other, shared| {
        fs::set_permissions(&target_path, fs::Permissions::from_mode(0o777)).expect("chmod");
        other.own(&target_path);
        std::os::unix::fs::symlink(&target_path, shared).expect("plant the link");
        other.own(shared);
        target_path.clone()
    });
    drop(target);
}

#[test]
fn a_new_folder_is_private_whatever_the_umask() {
    let env = Env::new();
    let project = TestProject::fixture();
    let mut command = project.command(
        "sh",
        &[
            "-c",
            "umask 0; exec \"$0\" \"$@\"",
            portguard_bin().to_str().expect("a UTF-8 path"),
            "config",
            "--json",
        ],
    );
    env.apply(&mut command);
    let finished = run_within(command, COMMAND_TIMEOUT);
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
    assert_eq!(mode_of(&env.shared()), 0o700);
    let cached: Vec<String> = entries(&env.shared())
        .into_iter()
        .filter(|name| name.starts_with("metadata-"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(mode_of(&env.shared().join(&cached[0])), 0o600);
    assert!(
        !env.home.path().join(".cache").exists(),
        "no fallback needed"
    );
}

#[test]
fn an_open_folder_of_this_user_is_made_private() {
    let env = Env::new();
    fs::create_dir(env.shared()).expect("create the folder");
    fs::set_permissions(env.shared(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let project = TestProject::fixture();
    let mut command = project.portguard(&["config", "--json"]);
    env.apply(&mut command);
    let finished = run_within(command, COMMAND_TIMEOUT);
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
    assert!(
        !finished.stderr.contains("warning"),
        "{}",
        finished.describe()
    );
    assert_eq!(mode_of(&env.shared()), 0o700);
}

#[test]
fn a_long_runtime_path_still_starts_and_hears_ready() {
    let env = Env::new();
    let mut xdg = env.xdg.path().to_owned();
    while xdg.as_os_str().len() < 110 {
        xdg.push("a-rather-long-folder-name");
    }
    fs::create_dir_all(&xdg).expect("create the long folder");
    let project = TestProject::fixture();
    // The server never accepts: only READY=1 on NOTIFY_SOCKET can make it ready.
    let port = project.set_metadata_on_free_port("handoff = \"socket\"\nready-timeout-ms = 60000");
    let mut command = project.serve_safe(&["--detach", "--", "--notify-ready", "--never-accept"]);
    command
        .env("XDG_RUNTIME_DIR", &xdg)
        .env("HOME", env.home.path());
    let started = run_within(command, COMMAND_TIMEOUT);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    assert_eq!(started.stdout.trim(), port.to_string());
    assert!(
        !started.stderr.contains("warning"),
        "{}",
        started.describe()
    );
    let log = fs::read_to_string(project.log_file(FIXTURE_INSTANCE)).expect("a log");
    assert!(log.contains("fixture: sent READY=1"), "{log}");
    assert!(
        xdg.join("portguard")
            .join(format!("port-{port}.lock"))
            .exists(),
        "the reservation is in the long folder"
    );
    stop(&project);
}

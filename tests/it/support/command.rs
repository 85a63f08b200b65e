//! Running the binaries under test: `cargo-serve-safe` and `cargo-portguard` in a fixture
//! project with a clean environment, to their end (`Finished`) or in the background
//! (`Running`), and reading what they print (the ready line, `status --json` entries).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::net::info;
use super::process::{
    OWNER_TAG, OnDrop, Running, ServeSafeRun, Spawned, start_background, wait_until,
};
use super::project::{FIXTURE_INSTANCE, TestProject};

/// What `cargo serve-safe` prints on stderr once the server answers, up to
/// the address.
pub const READY_LINE: &str = "Running on http://";

/// Covers a `cargo run` that has to build; the fixture itself is built before
/// the timer starts.
pub const READY_TIMEOUT: Duration = Duration::from_mins(1);

/// For a `cargo serve-safe` expected to exit without starting the server: it
/// finds bad input or a lack of ports before cargo builds anything, but
/// `cargo metadata` runs first.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn serve_safe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cargo-serve-safe"))
}

pub fn portguard_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cargo-portguard"))
}

/// The cargo that runs the tests, so fixtures build with the same toolchain.
pub fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

impl TestProject {
    /// A command run in the package root with a clean environment: the
    /// variables that configure portguard (or colour, or socket activation)
    /// removed, `NO_COLOR=1`, `CARGO_TARGET_DIR` set to `target_dir`, and
    /// the tag that lets cleanup find what it starts.
    /// `args` go to `bin` as they are: for `serve_safe_bin()` include the
    /// `serve-safe` word cargo would pass, or use `serve_safe`/`portguard`.
    pub fn command(&self, bin: impl AsRef<OsStr>, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        command
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null());
        let leaking = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| leaks_into_tests(name));
        for name in leaking {
            command.env_remove(name);
        }
        command
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .env("NO_COLOR", "1")
            .env(OWNER_TAG, self.dir.path());
        command
    }

    /// `cargo-serve-safe serve-safe ARGS`, prepared as `command` does.
    pub fn serve_safe(&self, args: &[&str]) -> Command {
        let mut all = vec!["serve-safe"];
        all.extend_from_slice(args);
        self.command(serve_safe_bin(), &all)
    }

    /// `cargo-portguard ARGS` (ARGS starting with the command, say `status`),
    /// prepared as `command` does.
    pub fn portguard(&self, args: &[&str]) -> Command {
        self.command(portguard_bin(), args)
    }

    /// Starts `cargo-serve-safe serve-safe ARGS` in the background, in a
    /// process group of its own (as a shell would start it).
    pub fn serve(&self, args: &[&str]) -> Running {
        self.serve_with_env(args, &[])
    }

    /// As `serve`, with `vars` set in its environment (after `command` has
    /// cleaned it, so they may set what it removes, such as `PORT`).
    pub fn serve_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Running {
        let mut command = self.serve_safe(args);
        command.envs(vars.iter().copied());
        Spawned::start(
            command,
            &serve_safe_bin().display().to_string(),
            ServeSafeRun {
                state_dir: self.state_dir(),
                owned_dir: self.dir.path().to_path_buf(),
            },
        )
    }
}

/// Variables from the developer's environment that would change what a test
/// sees.
fn leaks_into_tests(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PORT",
        "FALLBACK_PORTS",
        "MAX_PORT_ATTEMPTS",
        "PORT_CHECK_TIMEOUT",
        "CARGO_TERM_COLOR",
        "CLICOLOR",
        "CLICOLOR_FORCE",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_BUILD_DIR",
        // Set by `cargo test` for the test binary, about portguard itself.
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
    ];
    const PREFIXES: &[&str] = &["PORTGUARD_", "LISTEN_", "CARGO_PKG_", "CARGO_BIN_"];
    EXACT.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// A fixture server that `cargo serve-safe` reported ready.
pub struct Ready {
    /// The port in the ready line.
    pub port: u16,
    /// The ready line, without the status verb's indentation.
    pub line: String,
    /// The server's `GET /info`.
    pub info: serde_json::Value,
}

/// Waits for the complete ready line of the default instance
/// (`FIXTURE_INSTANCE`) and checks that the line, its `.json` and the server
/// agree on the port, and the `.json` and the server on the pid.
pub fn ready(project: &TestProject, server: &Running) -> Ready {
    let stderr = server
        .wait_for_stderr(READY_LINE, READY_TIMEOUT)
        .unwrap_or_else(|stderr| panic!("no ready line from cargo-serve-safe; stderr:\n{stderr}"));
    let start = stderr.find(READY_LINE).expect("found above");
    // The needle may have arrived before the rest of its line.
    assert!(
        wait_until(Duration::from_secs(5), || server.stderr()[start..]
            .contains('\n')),
        "the ready line never ended: {}",
        server.stderr()
    );
    let line = server.stderr()[start..]
        .lines()
        .next()
        .expect("a line")
        .to_owned();
    let addr = line[READY_LINE.len()..]
        .split_whitespace()
        .next()
        .expect("an address after `http://`");
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in the ready line {line:?}"));

    let json = project
        .read_json(FIXTURE_INSTANCE)
        .expect("a running instance has its .json");
    assert_eq!(
        json["port"], port,
        "the .json disagrees with {line:?}: {json}"
    );
    let info = info(port);
    assert_eq!(info["port"], port, "the server listens elsewhere: {info}");
    assert_eq!(
        json["pid"], info["pid"],
        "the .json names another pid: {json}"
    );
    Ready { port, line, info }
}

/// Bound on a portguard command expected to finish (`status`, `stop`, a
/// detached start, which may have to build).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

impl TestProject {
    /// `cargo-portguard ARGS`, run to its end (within `COMMAND_TIMEOUT`).
    pub fn run_portguard(&self, args: &[&str]) -> Finished {
        run_within(self.portguard(args), COMMAND_TIMEOUT)
    }

    /// `cargo-serve-safe serve-safe ARGS`, run to its end (within
    /// `COMMAND_TIMEOUT`): for `--detach`, which returns once the server is
    /// ready.
    pub fn run_serve_safe(&self, args: &[&str]) -> Finished {
        run_within(self.serve_safe(args), COMMAND_TIMEOUT)
    }
}

/// Runs `command` to its end; panics with its output if it takes longer
/// than `timeout` (it is killed then).
pub fn run_within(command: Command, timeout: Duration) -> Finished {
    let mut background = start_background(command);
    let Some(status) = background.wait_exit(timeout) else {
        panic!(
            "{} did not finish within {timeout:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            background.kind.program,
            background.stderr(),
            background.stdout()
        );
    };
    Finished {
        status,
        stdout: background.stdout(),
        stderr: background.stderr(),
    }
}

/// How a command run by `run_within` ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The whole output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.status, self.stderr, self.stdout
        )
    }
}

/// The keys of a running instance's entry in `status --json` (and
/// `serve-safe --detach --json`), as the contract lists them.
pub const RUNNING_ENTRY_KEYS: [&str; 11] = [
    "instance",
    "state",
    "pid",
    "supervisor_pid",
    "port",
    "host",
    "url",
    "handoff",
    "started_at",
    "uptime_secs",
    "health",
];

/// The keys of a JSON object (a status entry), sorted; panics if `entry` is
/// not an object.
pub fn sorted_keys(entry: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = entry
        .as_object()
        .unwrap_or_else(|| panic!("an entry is an object: {entry}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// `keys`, sorted, to compare with `sorted_keys`.
pub fn sorted(keys: &[&'static str]) -> Vec<&'static str> {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys
}

impl TestProject {
    /// `cargo-portguard init ARGS`, run to its end.
    pub fn init(&self, args: &[&str]) -> Finished {
        let mut all = vec!["init"];
        all.extend_from_slice(args);
        self.run_portguard(&all)
    }
}

impl TestProject {
    /// `cargo ARGS` as a user runs it in the package root: the real cargo,
    /// with `CARGO` removed and the folder of the test binaries first on
    /// PATH, so that `cargo serve-safe`, `cargo portguard` and the aliases
    /// `init` writes reach the binaries under test.
    pub fn user_cargo(&self, args: &[&str]) -> Command {
        let mut command = self.command(cargo_bin(), args);
        let mut path = vec![test_bin_dir()];
        path.extend(std::env::var_os("PATH").map_or_else(Vec::new, |path| {
            std::env::split_paths(&path).collect::<Vec<_>>()
        }));
        command.env_remove("CARGO").env(
            "PATH",
            std::env::join_paths(path).expect("PATH entries hold no separator"),
        );
        command
    }
}

/// The folder of `cargo-serve-safe` and `cargo-portguard` under test.
pub fn test_bin_dir() -> PathBuf {
    serve_safe_bin()
        .parent()
        .expect("a binary is in a folder")
        .to_path_buf()
}

/// The port in portguard's ready line (`Running on http://HOST:PORT`) once
/// `command` has printed it in full; panics with its stderr otherwise.
pub fn ready_port<K: OnDrop>(command: &Spawned<K>, timeout: Duration) -> u16 {
    let stderr = command
        .wait_for_stderr(READY_LINE, timeout)
        .unwrap_or_else(|stderr| panic!("no ready line within {timeout:?}; stderr:\n{stderr}"));
    let start = stderr.find(READY_LINE).expect("found above") + READY_LINE.len();
    assert!(
        wait_until(Duration::from_secs(5), || command.stderr()[start..]
            .contains('\n')),
        "the ready line never ended: {}",
        command.stderr()
    );
    let stderr = command.stderr();
    let addr = stderr[start..]
        .split_whitespace()
        .next()
        .expect("an address after `http://`");
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in the ready line: {addr:?}"))
}

/// `status ARGS --json`: the exit code and the parsed object.
pub fn status_json(
    project: &TestProject,
    args: &[&str],
) -> (Option<i32>, serde_json::Value, Finished) {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let finished = project.run_portguard(&all);
    let json = serde_json::from_str(&finished.stdout).unwrap_or_else(|err| {
        panic!(
            "status --json printed no JSON object ({err}):\n{}",
            finished.describe()
        )
    });
    (finished.code(), json, finished)
}

/// The entries of a `status --json` answer.
pub fn instances(json: &serde_json::Value) -> &Vec<serde_json::Value> {
    json["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no `instances` array in {json}"))
}

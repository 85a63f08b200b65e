//! Shared helpers for portguard's integration tests: fixture projects in temp
//! dirs, a guard for a running `cargo serve-safe`, and small network helpers.
//!
//! Fixture copies all build into one shared target dir, so the fixture server
//! compiles once per test run. The copies keep the template's file times, and
//! cargo hashes path packages by their path relative to the workspace root,
//! so every copy is the same unit to cargo: after the first build, a copy's
//! `cargo run` only checks freshness. The price is that a copy must not change
//! its Rust sources while it uses the shared dir (every other test would run
//! the changed binary); `write_file` refuses that, see `own_target_dir`.

// Each tests/*.rs binary compiles this module on its own and uses only part
// of it; the rest would warn as dead code in every one of them.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub mod measure;
pub mod users;

pub use rustix::process::Signal;
use rustix::process::{Pid, kill_process, kill_process_group, test_kill_process};

/// The instance name portguard gives the fixture by default (its binary name).
pub const FIXTURE_INSTANCE: &str = "fixture-server";

/// Exit code of the fixture when portguard broke the contract (see
/// tests/fixtures/server-core); it also says why on stderr.
pub const FIXTURE_CONTRACT_VIOLATION: i32 = 90;

/// Set on everything the harness starts, and inherited by what that starts,
/// so cleanup can tell this test's processes from all others. Not named
/// PORTGUARD_*, which portguard may read.
const OWNER_TAG: &str = "PG_TEST_PROJECT";

const POLL: Duration = Duration::from_millis(20);

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

fn fixtures_dir() -> PathBuf {
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

/// A port that was free a moment ago. Another process may take it before the
/// test uses it; use `hold_port` where the port must stay busy.
pub fn free_port() -> u16 {
    hold_port().1
}

/// A listener on 127.0.0.1 on an OS-chosen port, busy until it is dropped.
pub fn hold_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    (listener, port)
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

/// Copies a template folder, leaving out build output, with `@CORE@` in
/// Cargo.toml replaced by the path of tests/fixtures/server-core. File times
/// are kept so that cargo finds the copy's sources no newer than the shared
/// build (otherwise every copy would relink the binary all tests run).
fn copy_template(from: &Path, to: &Path) {
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

/// A pipe's output, collected by a thread as it arrives.
#[derive(Clone)]
struct Captured {
    buffer: Arc<Mutex<Vec<u8>>>,
    closed: Arc<AtomicBool>,
}

impl Captured {
    fn capture(mut pipe: impl Read + Send + 'static) -> Self {
        let output = Captured {
            buffer: Arc::default(),
            closed: Arc::default(),
        };
        let shared = output.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                lock(&shared.buffer).extend_from_slice(&chunk[..n]);
            }
            shared.closed.store(true, Ordering::SeqCst);
        });
        output
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.buffer)).into_owned()
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Ok(all output so far) once it contains `needle`; Err(all output) at
    /// the timeout, or as soon as the pipe closes without it.
    fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read `closed` first: output seen after it is final.
            let closed = self.is_closed();
            let text = self.text();
            if text.contains(needle) {
                return Ok(text);
            }
            if closed || Instant::now() >= deadline {
                return Err(text);
            }
            thread::sleep(POLL);
        }
    }
}

/// The buffer stays usable even if a thread panicked while holding it: the
/// output is still the best clue to why.
fn lock(buffer: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A command started in a process group of its own, with its stdout and
/// stderr collected as they arrive. `Running` and `Background` are this with
/// a different `K`: what else each knows, and what else it cleans up on
/// drop. Dropping either first kills the command and what it started, if it
/// is still running.
pub struct Spawned<K: OnDrop> {
    child: Child,
    status: Option<ExitStatus>,
    stdout: Captured,
    stderr: Captured,
    kind: K,
}

/// What dropping a `Spawned<Self>` does after `kill_tree`, which says
/// whether the command was still running.
pub trait OnDrop: Sized {
    fn on_drop(spawned: &Spawned<Self>, was_running: bool);
}

impl<K: OnDrop> Spawned<K> {
    /// Starts `command` with stdout and stderr piped, in a process group of
    /// its own (as a shell would start it); panics naming `what` if it cannot.
    fn start(mut command: Command, what: &str, kind: K) -> Self {
        use std::os::unix::process::CommandExt;

        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
        let stdout = Captured::capture(child.stdout.take().expect("piped stdout"));
        let stderr = Captured::capture(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            status: None,
            stdout,
            stderr,
            kind,
        }
    }

    /// The command's pid (also its process group id); for `Running`, the
    /// supervisor's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits until stderr contains `needle`. Ok(the whole stderr so far), or
    /// Err(the whole stderr) for the assertion message: at the timeout, or
    /// at once when stderr closes without it.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.stderr.wait_for(needle, timeout)
    }

    /// As `wait_for_stderr`, for stdout (where the server's own output goes).
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.stdout.wait_for(needle, timeout)
    }

    /// The exit status, if it exits within `timeout`. Once it has, also
    /// waits briefly for its output to arrive in full.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
            if self.status.is_none() {
                if Instant::now() >= deadline {
                    return None;
                }
                thread::sleep(POLL);
            }
        }
        // What it started may outlive it and keep the pipes open (a server
        // its supervisor left behind), so this cannot wait for them to close
        // for long.
        wait_until(Duration::from_millis(500), || {
            self.stdout.is_closed() && self.stderr.is_closed()
        });
        self.status
    }

    /// Whether it has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }

    /// Unless it has exited: SIGKILLs it, reaps it, and kills what it had
    /// started. Whether it was still running.
    fn kill_tree(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        // Found before the kill: afterwards they would be orphans.
        let descendants = descendants_of(self.pid());
        let _ = kill_process(pid_of(self.pid()), Signal::KILL);
        let _ = self.child.wait();
        for process in descendants {
            process.kill_if_same();
        }
        true
    }
}

impl<K: OnDrop> Drop for Spawned<K> {
    fn drop(&mut self) {
        let was_running = self.kill_tree();
        K::on_drop(self, was_running);
    }
}

/// A `cargo serve-safe` started by `TestProject::serve`. Dropping it kills
/// what it started, if still running, and nothing else.
pub type Running = Spawned<ServeSafeRun>;

/// What a `Running` knows besides the command: where to find a server its
/// supervisor left behind.
pub struct ServeSafeRun {
    state_dir: PathBuf,
    /// The test's temp dir, for `belongs_to`.
    owned_dir: PathBuf,
}

impl Running {
    /// Sends `sig` to the supervisor, unless it has exited and been reaped
    /// (its pid could then be someone else's).
    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            // An unreaped child's pid cannot be reused, so this hits only it.
            let _ = kill_process(pid_of(self.pid()), sig);
        }
    }

    /// Sends `sig` to the supervisor's whole process group, as a terminal
    /// does on Ctrl-C (SIGINT) or hang-up (SIGHUP).
    pub fn signal_group(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill_process_group(pid_of(self.pid()), sig);
        }
    }
}

impl OnDrop for ServeSafeRun {
    fn on_drop(running: &Running, _was_running: bool) {
        let ServeSafeRun {
            state_dir,
            owned_dir,
        } = &running.kind;
        // A server whose supervisor died first is found by its pid file.
        if let Ok(entries) = fs::read_dir(state_dir) {
            for entry in entries.flatten() {
                if entry.path().extension() != Some(OsStr::new("pid")) {
                    continue;
                }
                let pid = fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|text| text.trim().parse::<u32>().ok())
                    .filter(|&pid| belongs_to(pid, owned_dir));
                if let Some(pid) = pid {
                    let _ = kill_process(pid_of(pid), Signal::KILL);
                }
            }
        }
        if thread::panicking() {
            // The test failed: what portguard said is the best clue.
            eprintln!(
                "--- cargo-serve-safe stderr ---\n{}\n--- cargo-serve-safe stdout ---\n{}",
                running.stderr(),
                running.stdout()
            );
        }
    }
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(pid as i32).expect("a pid is never 0")
}

/// Polls `condition` until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// `GET path` on 127.0.0.1:port: the status code and body, or why not.
/// The fixture answers with `Connection: close`, so the body is all that
/// follows the headers.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    http_get_within(port, path, Duration::from_secs(2)).map_err(|err| err.message)
}

/// The fixture's `GET /info` on 127.0.0.1:port; panics unless it answers 200
/// with JSON.
pub fn info(port: u16) -> serde_json::Value {
    let (status, body) = http_get(port, "/info").expect("GET /info");
    assert_eq!(status, 200, "GET /info: {body}");
    serde_json::from_str(&body).expect("/info is JSON")
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

/// Whether no listener holds `port` on any local IPv4 or IPv6 address (a
/// wildcard bind conflicts with all of them), within `timeout`.
pub fn wait_until_port_free(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || port_is_free(port))
}

fn port_is_free(port: u16) -> bool {
    if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_err() {
        return false;
    }
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(_) => true,
        // Without IPv6 on this host nothing can listen there either.
        Err(err) => err.kind() != std::io::ErrorKind::AddrInUse,
    }
}

/// Whether `pid` names a live process; a zombie (exited, not yet reaped)
/// counts as dead.
pub fn process_alive(pid: u32) -> bool {
    let Some(raw) = Pid::from_raw(pid as i32) else {
        return false;
    };
    match test_kill_process(raw) {
        Ok(()) => !is_zombie(pid),
        // EPERM: it exists, but belongs to someone else.
        Err(err) => err == rustix::io::Errno::PERM,
    }
}

#[cfg(target_os = "linux")]
fn is_zombie(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|stat| stat.state == 'Z')
}

#[cfg(not(target_os = "linux"))]
fn is_zombie(pid: u32) -> bool {
    ps_field(pid, "stat=").is_some_and(|state| state.starts_with('Z'))
}

/// A process found earlier, with what tells it apart from a later process
/// that reuses its pid.
struct Found {
    pid: u32,
    start_time: Option<u64>,
}

impl Found {
    fn kill_if_same(&self) {
        if start_time(self.pid) == self.start_time && process_alive(self.pid) {
            let _ = kill_process(pid_of(self.pid), Signal::KILL);
        }
    }
}

/// All processes below `pid` in the process tree.
fn descendants_of(pid: u32) -> Vec<Found> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (child, parent) in process_table() {
        children.entry(parent).or_default().push(child);
    }
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            if seen.insert(child) {
                found.push(Found {
                    pid: child,
                    start_time: start_time(child),
                });
                queue.push(child);
            }
        }
    }
    found
}

/// Kills every process that `belongs_to` the test that made `dir`.
fn kill_processes_inside(dir: &Path) {
    let me = std::process::id();
    for (pid, _) in process_table() {
        if pid != me && belongs_to(pid, dir) {
            let _ = kill_process(pid_of(pid), Signal::KILL);
        }
    }
}

#[cfg(target_os = "linux")]
struct ProcStat {
    state: char,
    ppid: u32,
    start_time: u64,
}

/// /proc/PID/stat; the command name in it may hold spaces and parentheses,
/// so fields are counted from the last ')'.
#[cfg(target_os = "linux")]
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        // Field 22 of stat; the first field after ')' is field 3.
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// (pid, parent pid) of every process we can see.
#[cfg(target_os = "linux")]
fn process_table() -> Vec<(u32, u32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?.ppid)))
        .collect()
}

#[cfg(target_os = "linux")]
fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|stat| stat.start_time)
}

/// Whether `pid` was started for the test that owns `dir`: it works inside
/// `dir`, or it inherited the harness's tag naming `dir` (a daemon may have
/// moved to `/`).
#[cfg(target_os = "linux")]
fn belongs_to(pid: u32, dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;

    let canonical = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&canonical)) {
        return true;
    }
    let mut tag = format!("{OWNER_TAG}=").into_bytes();
    tag.extend_from_slice(dir.as_os_str().as_bytes());
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|environ| environ.split(|&byte| byte == 0).any(|entry| entry == tag))
}

// Elsewhere `ps` gives the tree, but neither the working directory nor the
// environment is portably readable, so only a supervisor's own descendants
// are cleaned up there.
#[cfg(not(target_os = "linux"))]
fn ps_field(pid: u32, field: &str) -> Option<String> {
    let output = Command::new("ps")
        .args(["-o", field, "-p", &pid.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}

#[cfg(not(target_os = "linux"))]
fn process_table() -> Vec<(u32, u32)> {
    let Ok(output) = Command::new("ps").args(["-A", "-o", "pid=,ppid="]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn start_time(pid: u32) -> Option<u64> {
    let text = ps_field(pid, "lstart=")?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&text, &mut hasher);
    Some(std::hash::Hasher::finish(&hasher))
}

#[cfg(not(target_os = "linux"))]
fn belongs_to(_pid: u32, _dir: &Path) -> bool {
    false
}

// ---------------------------------------------------------------------------
// Operating commands (`status`, `stop`, `logs -f`, ...), detached instances,
// and what a test leaves behind.

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

    pub fn log_file(&self, instance: &str) -> PathBuf {
        self.state_dir().join(format!("{instance}.log"))
    }

    pub fn lock_file(&self, instance: &str) -> PathBuf {
        self.state_dir().join(format!("{instance}.lock"))
    }

    /// The processes still running for this test (pid and command name):
    /// those working inside its temp dir or carrying its tag, as cleanup
    /// finds them. Always empty where that cannot be told (not Linux).
    pub fn processes_left(&self) -> Vec<String> {
        processes_inside(self.dir.path())
    }

    /// Waits up to `timeout` until no process of this test is left; Err(the
    /// ones left) otherwise.
    pub fn wait_until_no_process_left(&self, timeout: Duration) -> Result<(), Vec<String>> {
        let mut left = Vec::new();
        if wait_until(timeout, || {
            left = self.processes_left();
            left.is_empty()
        }) {
            Ok(())
        } else {
            Err(left)
        }
    }
}

/// Starts `command` (from `command`, `portguard` or `serve_safe`) in the
/// background, in a process group of its own, collecting its output.
pub fn start_background(command: Command) -> Background {
    let program = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    Spawned::start(command, &program.clone(), BackgroundRun { program })
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

/// A command started by `start_background`. Dropping it kills the command
/// and what it started, if still running; unlike `Running` it leaves the
/// instances' servers alone (they have guards of their own).
pub type Background = Spawned<BackgroundRun>;

/// What a `Background` knows besides the command: its command line.
pub struct BackgroundRun {
    program: String,
}

impl OnDrop for BackgroundRun {
    fn on_drop(background: &Background, was_running: bool) {
        if was_running && thread::panicking() {
            eprintln!(
                "--- {} stderr ---\n{}\n--- stdout ---\n{}",
                background.kind.program,
                background.stderr(),
                background.stdout()
            );
        }
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

/// Why `http_get_within` got no answer: the kind tells a refused connection
/// (`ConnectionRefused`) from one cut off (`ConnectionReset`, or
/// `UnexpectedEof` for an incomplete response) and a timeout.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub kind: std::io::ErrorKind,
    pub message: String,
}

/// As `http_get`, with `timeout` on the connect and on each read and write,
/// and an error that says what went wrong.
pub fn http_get_within(
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let fail = |what: &str, err: std::io::Error| HttpError {
        kind: err.kind(),
        message: format!("{what} {addr}: {err}"),
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|err| fail("connect", err))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|err| fail("set timeouts on", err))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|err| fail("send request to", err))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|err| fail("read response from", err))?;
    let response = String::from_utf8_lossy(&response);
    let incomplete = || HttpError {
        kind: std::io::ErrorKind::UnexpectedEof,
        message: format!("incomplete response from {addr}: {response:?}"),
    };
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(incomplete)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(incomplete)?;
    Ok((status, body.to_string()))
}

/// SIGKILLs the supervisors and servers recorded in the `.json` files of
/// `state_dir` that are still the processes recorded there (same pid, same
/// start time, as portguard itself proves it).
fn kill_recorded_processes(state_dir: &Path) {
    let Ok(entries) = fs::read_dir(state_dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        if entry.path().extension() != Some(OsStr::new("json")) {
            continue;
        }
        let Some(record) = fs::read_to_string(entry.path())
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        else {
            continue;
        };
        for (pid_key, start_key) in [
            ("supervisor_pid", "supervisor_start_time"),
            ("pid", "pid_start_time"),
        ] {
            let pid = record[pid_key]
                .as_u64()
                .and_then(|pid| u32::try_from(pid).ok());
            let recorded = record[start_key].as_str();
            if let (Some(pid), Some(recorded)) = (pid, recorded)
                && pid > 1
                && pid != me
                && recorded_start_time(pid).as_deref() == Some(recorded)
            {
                let _ = kill_process(pid_of(pid), Signal::KILL);
            }
        }
    }
}

/// A process's start time as portguard records it (`pid_start_time`).
#[cfg(target_os = "linux")]
fn recorded_start_time(pid: u32) -> Option<String> {
    start_time(pid).map(|ticks| ticks.to_string())
}

#[cfg(not(target_os = "linux"))]
fn recorded_start_time(pid: u32) -> Option<String> {
    ps_field(pid, "lstart=")
}

/// Live processes that `belongs_to` the test that made `dir`, as "pid
/// (command name)".
fn processes_inside(dir: &Path) -> Vec<String> {
    let me = std::process::id();
    process_table()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| pid != me && belongs_to(pid, dir) && process_alive(pid))
        .map(|pid| {
            let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} ({})", name.trim())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// `cargo portguard init`: input projects from tests/fixtures/init, whole-tree
// snapshots to prove what init did or did not touch, and `cargo` run as a
// user runs it, with the test binaries as its subcommands.

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

    /// `cargo-portguard init ARGS`, run to its end.
    pub fn init(&self, args: &[&str]) -> Finished {
        let mut all = vec!["init"];
        all.extend_from_slice(args);
        self.run_portguard(&all)
    }

    /// Every file, folder and symlink under the temp dir (`target` folders
    /// left out), with the bytes and time of each file.
    pub fn tree(&self) -> Tree {
        Tree::of(self.dir.path())
    }

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

/// The folder of `cargo-serve-safe` and `cargo-portguard` under test.
pub fn test_bin_dir() -> PathBuf {
    serve_safe_bin()
        .parent()
        .expect("a binary is in a folder")
        .to_path_buf()
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

// ---------------------------------------------------------------------------
// Benchmarks (benches/*.rs include this harness): their results in BENCHMARKS.md.

/// Replaces this benchmark's section of BENCHMARKS.md, with the machine and the date.
pub fn write_bench_section(name: &str, table: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let section = format!("{begin}\n{}\n{table}{end}", bench_machine());
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(start), Some(stop)) => format!(
            "{}{section}{}",
            &existing[..start],
            &existing[stop + end.len()..]
        ),
        _ => format!("{}\n{section}\n", existing.trim_end()),
    };
    std::fs::write(&path, updated).expect("write BENCHMARKS.md");
}

fn bench_machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let kernel = std::process::Command::new("uname")
        .arg("-sr")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("Measured {date} on {cpu}, {cores} cores, {kernel}; release build.\n")
}

/// The first of `len` consecutive ports, all free now, below the OS's ephemeral range. Tests
/// where servers bind their own port (env handoff) use it when they start many at once: a port
/// in the ephemeral range can become the source port of any test's outgoing connection between
/// portguard's check and the server's bind. The base still comes from the OS (an ephemeral port
/// folded below the range), so no port number is fixed and parallel tests spread out.
pub fn quiet_port_range(len: u16) -> u16 {
    let ephemeral_start: u16 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = ephemeral_start
        .saturating_sub(10_000)
        .saturating_sub(len)
        .max(1);
    for _ in 0..50 {
        let base = 10_000 + free_port() % span;
        let all_free =
            (base..base + len).all(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {len} free consecutive ports below {ephemeral_start}")
}

// ---------------------------------------------------------------------------
// systemd unit files, as `cargo portguard generate` writes them.

/// The `(section, key, value)` settings of a unit file, in order; comments and blank lines
/// left out.
pub fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            name.clone_into(&mut section);
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("a unit file line is a section or Key=value: {line:?}"));
        settings.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    settings
}

/// The one value of `key` in `section`; panics, showing the file, unless there is exactly one.
pub fn unit_value<'a>(
    settings: &'a [(String, String, String)],
    section: &str,
    key: &str,
    text: &str,
) -> &'a str {
    let values: Vec<&str> = settings
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, value)| value.as_str())
        .collect();
    match values.as_slice() {
        [value] => value,
        _ => panic!("expected one {key}= in [{section}], found {values:?} in:\n{text}"),
    }
}

//! Processes a test starts: guards that kill what they started when dropped (`Running`,
//! `Background`), waits, signals, and what the process table says (alive, zombie, group,
//! descendants, which test a process belongs to), so that cleanup never touches a process the
//! test did not start.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{
    Pid, Signal, kill_process, kill_process_group, test_kill_process, test_kill_process_group,
};

use super::project::TestProject;

/// Set on everything the harness starts, and inherited by what that starts,
/// so cleanup can tell this test's processes from all others. Not named
/// PORTGUARD_*, which portguard may read.
pub(super) const OWNER_TAG: &str = "PG_TEST_PROJECT";

pub(super) const POLL: Duration = Duration::from_millis(20);

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
    pub(super) status: Option<ExitStatus>,
    stdout: Captured,
    stderr: Captured,
    pub(super) kind: K,
}

/// What dropping a `Spawned<Self>` does after `kill_tree`, which says
/// whether the command was still running.
pub trait OnDrop: Sized {
    fn on_drop(spawned: &Spawned<Self>, was_running: bool);
}

impl<K: OnDrop> Spawned<K> {
    /// Starts `command` with stdout and stderr piped, in a process group of
    /// its own (as a shell would start it); panics naming `what` if it cannot.
    pub(super) fn start(mut command: Command, what: &str, kind: K) -> Self {
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
    pub(super) state_dir: PathBuf,
    /// The test's temp dir, for `belongs_to`.
    pub(super) owned_dir: PathBuf,
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

/// Whether any process is left in the process group `pgid`.
pub fn group_exists(pgid: u32) -> bool {
    Pid::from_raw(pgid as i32).is_some_and(|pgid| test_kill_process_group(pgid).is_ok())
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
pub(super) fn kill_processes_inside(dir: &Path) {
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

impl TestProject {
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

/// A command started by `start_background`. Dropping it kills the command
/// and what it started, if still running; unlike `Running` it leaves the
/// instances' servers alone (they have guards of their own).
pub type Background = Spawned<BackgroundRun>;

/// What a `Background` knows besides the command: its command line.
pub struct BackgroundRun {
    pub(super) program: String,
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

/// SIGKILLs the supervisors and servers recorded in the `.json` files of
/// `state_dir` that are still the processes recorded there (same pid, same
/// start time, as portguard itself proves it).
pub(super) fn kill_recorded_processes(state_dir: &Path) {
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
pub(super) fn processes_inside(dir: &Path) -> Vec<String> {
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

//! Another local account attacks portguard through what it can plant: state folders above a
//! project in a shared folder, records naming processes it does not own, FIFOs and huge files
//! where state files belong, a socket holder that escaped a crashed run. Whatever is planted,
//! portguard signals only what it started, never hangs, never reads a huge file whole, says which
//! file or folder it refused, and leaves nothing running.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::other_account_or_skip;
use crate::support::measure::{Measured, run_measured};
use crate::support::users::{self, Account, my_uid};
use crate::support::*;

/// Bound on an operating command (`status`, `stop`, `logs`) facing planted state: it must answer
/// at once, never wait on a FIFO or read gigabytes.
const QUICK: Duration = Duration::from_secs(5);
/// Bound on a detached start, which runs `cargo run` of the built fixture.
const START: Duration = Duration::from_mins(1);
/// A command that read a 2 GiB file into memory would hold far more than this.
const MEMORY_LIMIT_KIB: u64 = 256 * 1024;
const GONE: Duration = Duration::from_secs(10);

/// The instance the planted records are about.
const PLANTED: &str = "web";

/// Field 22 of /proc/PID/stat (the start time in clock ticks), as portguard records it.
fn start_time_of(pid: u32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|err| panic!("read /proc/{pid}/stat: {err}"));
    // The command name may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')').expect("a ')' in stat") + 1..];
    rest.split_whitespace()
        .nth(19)
        .expect("field 22 in stat")
        .to_owned()
}

/// A `sleep` started by the test in a process group of its own, killed when dropped.
fn sleeper(mut command: Command) -> Background {
    command.arg("600").current_dir("/");
    let sleeper = start_background(command);
    assert!(
        wait_until(GONE, || fs::read_link(format!(
            "/proc/{}/exe",
            sleeper.pid()
        ))
        .is_ok_and(|exe| exe.ends_with("sleep"))),
        "the test's sleep never started"
    );
    sleeper
}

/// `flock LOCK sleep 600`, run by `command` (root's or the other account's `flock`), holding
/// the lock until dropped.
fn lock_holder(mut command: Command, lock: &Path) -> Background {
    command.arg(lock).args(["sleep", "600"]).current_dir("/");
    let holder = start_background(command);
    assert!(
        wait_until(GONE, || lock_is_held(lock)),
        "flock never took {}",
        lock.display()
    );
    holder
}

/// Whether someone holds an exclusive flock on `lock` (a shared one cannot be had).
fn lock_is_held(lock: &Path) -> bool {
    let status = Command::new("flock")
        .args(["-n", "-s"])
        .arg(lock)
        .arg("true")
        .status()
        .expect("run flock");
    !status.success()
}

/// A record of instance `instance` as portguard writes it, naming `pid` as both server and
/// supervisor, with its real start time.
fn record_naming(instance: &str, pid: u32, port: u16, manifest: &Path) -> String {
    let start = start_time_of(pid);
    serde_json::json!({
        "instance": instance,
        "pid": pid,
        "supervisor_pid": pid,
        "port": port,
        "host": "127.0.0.1",
        "url": format!("http://127.0.0.1:{port}"),
        "handoff": "env",
        "started_at": "2026-01-01T00:00:00Z",
        "package": "fixture-server",
        "bin": "fixture-server",
        "manifest_path": manifest,
        "portguard_version": env!("CARGO_PKG_VERSION"),
        "pid_start_time": start,
        "supervisor_start_time": start,
        "ready": true,
        "check_timeout_ms": 500,
        "shutdown_timeout_ms": 1000,
    })
    .to_string()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|err| panic!("chmod {}: {err}", path.display()));
}

fn assert_alive(pid: u32, after: &str, finished: &Finished) {
    assert!(
        process_alive(pid),
        "{after} signalled the test's process {pid}:\n{}",
        finished.describe()
    );
}

// ---------------------------------------------------------------------------
// 1. State planted in a shared folder above the project.

/// A fixture project in `<temp>/shared/project`, where `shared` is world-writable and sticky
/// like /tmp, and the temp dir can be crossed by the other account.
fn project_below_shared_folder() -> (TestProject, PathBuf) {
    let project = TestProject::fixture_in("shared/project");
    chmod(project.dir.path(), 0o755);
    let shared = project.dir.path().join("shared");
    chmod(&shared, 0o1777);
    (project, shared)
}

/// How the planted folder is made, and so how portguard must describe it.
enum Planter {
    /// The other account's own folder, its files its own.
    OtherAccount(Account),
    /// A folder of the test's own (root's) that anyone can write, its files private.
    OpenFolder,
}

/// Plants `.portguard/` in `parent` with a record and pid file naming `target`, and an empty
/// lock file; returns the folder.
fn plant_state(planter: &Planter, parent: &Path, target: u32, manifest: &Path) -> PathBuf {
    let state = parent.join(".portguard");
    let port = free_port();
    let record = record_naming(PLANTED, target, port, manifest);
    let files = [
        (format!("{PLANTED}.json"), record.into_bytes()),
        (format!("{PLANTED}.pid"), format!("{target}\n").into_bytes()),
        (format!("{PLANTED}.lock"), Vec::new()),
    ];
    match planter {
        Planter::OtherAccount(account) => {
            account.plant_dir(&state, 0o755);
            for (name, contents) in &files {
                account.plant(&state.join(name), contents, 0o644);
            }
        }
        Planter::OpenFolder => {
            fs::create_dir(&state).expect("mkdir .portguard");
            chmod(&state, 0o777);
            for (name, contents) in &files {
                fs::write(state.join(name), contents).expect("write a planted file");
                chmod(&state.join(name), 0o600);
            }
        }
    }
    state
}

/// What the warning about a skipped folder must name besides its path: its owner, or who else
/// may write to it.
fn owner_note(planter: &Planter) -> String {
    match planter {
        Planter::OtherAccount(account) => format!("belongs to uid {}", account.uid),
        Planter::OpenFolder => "may be written by other users (mode 0777)".to_owned(),
    }
}

fn assert_skipped_with_warning(finished: &Finished, state: &Path, planter: &Planter) {
    let warning = finished
        .stderr
        .lines()
        .find(|line| line.contains("warning:") && line.contains(&*state.to_string_lossy()))
        .unwrap_or_else(|| {
            panic!(
                "no warning naming the untrusted folder {}:\n{}",
                state.display(),
                finished.describe()
            )
        });
    assert!(
        warning.contains(&owner_note(planter)),
        "the warning does not say `{}`: {warning}",
        owner_note(planter)
    );
}

/// Every operating command run from the project below `state` skips it, warns, answers as if
/// nothing ran there, and leaves `target` alive.
fn operating_commands_skip(
    project: &TestProject,
    state: &Path,
    planter: &Planter,
    target: u32,
    vars: &[(&str, &Path)],
) {
    let expectations: [(&[&str], i32, &str); 5] = [
        (&["status"], 3, "no instance"),
        (&["status", "--instance", PLANTED], 3, "not running"),
        (&["stop"], 0, "nothing"),
        (&["stop", "--all"], 0, "nothing"),
        (&["restart"], 1, "nothing to restart"),
    ];
    for (args, code, answer) in expectations {
        let mut command = project.portguard(args);
        for (name, value) in vars {
            command.env(name, value);
        }
        let finished = run_within(command, QUICK);
        let what = format!("`cargo portguard {}`", args.join(" "));
        assert_alive(target, &what, &finished);
        assert_eq!(
            finished.code(),
            Some(code),
            "{what}: {}",
            finished.describe()
        );
        assert!(
            finished.stdout.contains(answer) || finished.stderr.contains(answer),
            "{what} does not say `{answer}`: {}",
            finished.describe()
        );
        assert_skipped_with_warning(&finished, state, planter);
    }
}

/// `serve-safe --force --detach` of the project below starts in the project's own state folder
/// and leaves `target` alone; its stop does too.
fn forced_start_leaves_target_alone(project: &TestProject, target: u32) {
    let port = project.set_metadata_on_free_port("");
    let started = run_within(project.serve_safe(&["--force", "--detach"]), START);
    assert_alive(target, "`cargo serve-safe --force`", &started);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    assert_eq!(started.stdout.trim(), port.to_string());
    let stopped = run_within(project.portguard(&["stop"]), COMMAND_TIMEOUT);
    assert_alive(
        target,
        "`cargo portguard stop` of the real instance",
        &stopped,
    );
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    if let Err(left) = project.wait_until_no_process_left(GONE) {
        panic!("processes left behind: {left:?}");
    }
}

fn planted_by_other_account(hold_lock: bool) {
    let account = other_account_or_skip!();
    let (project, shared) = project_below_shared_folder();
    let target = sleeper(Command::new("sleep"));
    let planter = Planter::OtherAccount(account);
    let state = plant_state(&planter, &shared, target.pid(), &project.manifest_path());
    let _holder = hold_lock.then(|| {
        let mut flock = account.command("flock");
        flock.arg("-x");
        lock_holder(flock, &state.join(format!("{PLANTED}.lock")))
    });
    operating_commands_skip(&project, &state, &planter, target.pid(), &[]);
    forced_start_leaves_target_alone(&project, target.pid());
}

#[test]
fn state_planted_above_by_another_account_is_skipped() {
    planted_by_other_account(false);
}

#[test]
fn state_planted_above_by_another_account_holding_the_lock_is_skipped() {
    planted_by_other_account(true);
}

/// Root's own records, in a folder anyone can write: the lock is held by the very process they
/// name, so only the folder check stands between them and a signal.
fn open_folder_of_our_own(hold_lock: bool, through_variable: bool) {
    let _account = other_account_or_skip!();
    let (project, shared) = project_below_shared_folder();
    let planter = Planter::OpenFolder;
    let state = shared.join(".portguard");
    let lock = state.join(format!("{PLANTED}.lock"));
    // The target is the lock holder itself when the lock is held: a record that names it
    // passes every proof but the folder's.
    let target = if hold_lock {
        fs::create_dir(&state).expect("mkdir .portguard");
        chmod(&state, 0o777);
        fs::write(&lock, "").expect("write the lock");
        chmod(&lock, 0o600);
        let mut flock = Command::new("flock");
        flock.arg("-x");
        lock_holder(flock, &lock)
    } else {
        sleeper(Command::new("sleep"))
    };
    if hold_lock {
        let record = record_naming(PLANTED, target.pid(), free_port(), &project.manifest_path());
        for (name, contents) in [
            (format!("{PLANTED}.json"), record),
            (format!("{PLANTED}.pid"), format!("{}\n", target.pid())),
        ] {
            fs::write(state.join(&name), contents).expect("write a planted file");
            chmod(&state.join(name), 0o600);
        }
    } else {
        plant_state(&planter, &shared, target.pid(), &project.manifest_path());
    }
    if through_variable {
        let vars = [("PORTGUARD_STATE_DIR", state.as_path())];
        operating_commands_skip(&project, &state, &planter, target.pid(), &vars);
        let mut command = project.serve_safe(&["--force", "--detach"]);
        command.env("PORTGUARD_STATE_DIR", &state);
        let refused = run_within(command, START);
        assert_alive(target.pid(), "`cargo serve-safe --force`", &refused);
        assert_ne!(refused.code(), Some(0), "{}", refused.describe());
        assert!(
            refused.stderr.contains(&*state.to_string_lossy())
                && refused.stderr.contains(&owner_note(&planter)),
            "the refusal does not name the folder and why: {}",
            refused.describe()
        );
    } else {
        operating_commands_skip(&project, &state, &planter, target.pid(), &[]);
        forced_start_leaves_target_alone(&project, target.pid());
    }
}

#[test]
fn an_open_state_folder_of_our_own_above_is_skipped() {
    open_folder_of_our_own(false, false);
}

#[test]
fn an_open_state_folder_of_our_own_above_is_skipped_with_its_lock_held() {
    open_folder_of_our_own(true, false);
}

#[test]
fn an_open_state_folder_named_by_the_variable_is_skipped() {
    open_folder_of_our_own(true, true);
}

// ---------------------------------------------------------------------------
// 2. A private record of our own that lies.

/// Writes a private `.portguard/` in the project with a record of the fixture's instance naming
/// `target`.
fn write_private_record(project: &TestProject, target: u32, port: u16) {
    let state = project.state_dir();
    fs::create_dir_all(&state).expect("mkdir .portguard");
    chmod(&state, 0o700);
    let record = record_naming(FIXTURE_INSTANCE, target, port, &project.manifest_path());
    for (path, contents) in [
        (project.json_file(FIXTURE_INSTANCE), record),
        (project.pid_file(FIXTURE_INSTANCE), format!("{target}\n")),
        (project.lock_file(FIXTURE_INSTANCE), String::new()),
    ] {
        fs::write(&path, contents).expect("write the record");
        chmod(&path, 0o600);
    }
}

#[test]
fn a_record_naming_another_users_process_never_gets_it_signalled() {
    let account = other_account_or_skip!();
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let victim = sleeper(account.command("sleep"));
    assert_ne!(
        users::owner_of(Path::new(&format!("/proc/{}", victim.pid()))),
        my_uid()
    );
    write_private_record(&project, victim.pid(), port);

    // No lock held: the record is what a crashed run left.
    let status = run_within(project.portguard(&["status"]), QUICK);
    assert_alive(victim.pid(), "`cargo portguard status`", &status);
    assert_eq!(status.code(), Some(3), "{}", status.describe());
    let stopped = run_within(project.portguard(&["stop"]), QUICK);
    assert_alive(victim.pid(), "`cargo portguard stop`", &stopped);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());

    // Held by a process of the test's: the record claims a running supervisor.
    write_private_record(&project, victim.pid(), port);
    let mut flock = Command::new("flock");
    flock.arg("-x");
    let holder = lock_holder(flock, &project.lock_file(FIXTURE_INSTANCE));
    let stopped = run_within(project.portguard(&["stop"]), QUICK);
    assert_alive(victim.pid(), "`cargo portguard stop`", &stopped);
    assert_eq!(stopped.code(), Some(1), "{}", stopped.describe());
    assert!(
        stopped.stderr.contains("belongs to another user"),
        "{}",
        stopped.describe()
    );
    let forced = run_within(project.serve_safe(&["--force", "--detach"]), START);
    assert_alive(victim.pid(), "`cargo serve-safe --force`", &forced);
    assert_ne!(forced.code(), Some(0), "{}", forced.describe());
    drop(holder);
    // The holder's group is killed, not reaped at once: the lock is free once it is gone.
    let lock = project.lock_file(FIXTURE_INSTANCE);
    assert!(
        wait_until(GONE, || !lock_is_held(&lock)),
        "the holder kept {}",
        lock.display()
    );

    // Free again: the next start takes over the lock and cleans up, signalling nothing.
    let started = run_within(project.serve_safe(&["--detach"]), START);
    assert_alive(victim.pid(), "`cargo serve-safe`", &started);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    let stopped = run_within(project.portguard(&["stop"]), COMMAND_TIMEOUT);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    assert_alive(victim.pid(), "`cargo portguard stop`", &stopped);
}

#[test]
fn stop_refuses_a_recorded_supervisor_that_does_not_hold_the_lock() {
    let project = TestProject::fixture();
    let target = sleeper(Command::new("sleep"));
    write_private_record(&project, target.pid(), free_port());
    let mut flock = Command::new("flock");
    flock.arg("-x");
    let _holder = lock_holder(flock, &project.lock_file(FIXTURE_INSTANCE));
    let stopped = run_within(project.portguard(&["stop"]), QUICK);
    assert_alive(target.pid(), "`cargo portguard stop`", &stopped);
    assert_eq!(stopped.code(), Some(1), "{}", stopped.describe());
    assert!(
        stopped.stderr.contains("does not hold the lock"),
        "{}",
        stopped.describe()
    );
    let restarted = run_within(project.portguard(&["restart"]), QUICK);
    assert_alive(target.pid(), "`cargo portguard restart`", &restarted);
    assert_eq!(restarted.code(), Some(1), "{}", restarted.describe());
}

// ---------------------------------------------------------------------------
// 3. FIFOs and huge sparse files where state files belong.

/// What is planted at a state path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Fifo,
    /// 2 GiB of nothing: reading it whole would take seconds and gigabytes.
    Sparse,
}

const SPARSE_SIZE: u64 = 2 * 1024 * 1024 * 1024;

/// Removes what was planted at a path before the project's cleanup reads its state folder
/// (which would wait on a FIFO, or read a huge file).
struct Planted(PathBuf);

impl Planted {
    fn new(path: PathBuf, bad: Bad) -> Self {
        let planted = Planted(path);
        planted.replant(bad);
        planted
    }

    /// Puts a fresh bad file in place, whatever a command left there.
    fn replant(&self, bad: Bad) {
        let path = &self.0;
        let _ = fs::remove_file(path);
        match bad {
            Bad::Fifo => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    path,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap_or_else(|err| panic!("mkfifo {}: {err}", path.display()));
            }
            Bad::Sparse => {
                let file = fs::File::create(path).expect("create the sparse file");
                file.set_len(SPARSE_SIZE).expect("make the file sparse");
                chmod(path, 0o600);
            }
        }
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A run must be quick and small: no wait on a FIFO, no huge file read whole.
fn assert_cheap(measured: &Measured, what: &str, bound: Duration) {
    assert!(
        measured.elapsed < bound,
        "{what} took {:?}:\n{}",
        measured.elapsed,
        measured.finished.describe()
    );
    assert!(
        measured.max_rss_kib < MEMORY_LIMIT_KIB,
        "{what} held {} KiB of memory:\n{}",
        measured.max_rss_kib,
        measured.finished.describe()
    );
}

/// What a user must see from one run with a bad file planted: the exit code, and a text the
/// output must hold (`PATH` stands for the planted file's path).
fn expected(extension: &str, bad: Bad, args: &[&str]) -> (i32, &'static str) {
    let refused_lock = "refusing the lock: PATH is a FIFO, not a regular file";
    match (extension, bad, args) {
        ("lock", Bad::Fifo, ["status" | "serve-safe", ..] | ["stop"]) => (1, refused_lock),
        ("log", Bad::Fifo, ["logs"] | ["serve-safe", ..]) => {
            (1, "PATH is a FIFO, not a regular file")
        }
        ("log", Bad::Sparse, ["logs"]) => (
            0,
            "`PATH` is 2147483648 bytes long, more than portguard writes",
        ),
        // A record that cannot be read is a crashed run's: reported, and cleaned up by the
        // holder of the lock.
        ("json" | "pid", _, ["status"]) => (3, "stale"),
        ("json" | "pid", _, ["status", "--json"]) => (3, "\"state\": \"stale\""),
        ("json" | "pid", _, ["stop"]) => (0, "removed unreadable state"),
        (_, _, ["status"]) => (3, "no instance is running"),
        (_, _, ["status", "--json"]) => (3, "\"instances\": []"),
        (_, _, ["stop"]) => (0, "Stopped nothing"),
        // A log is left only by an earlier detached start of this test.
        (_, _, ["logs"]) => (1, "no log here"),
        (_, _, ["serve-safe", ..]) => (0, "Detached supervisor"),
        _ => panic!("no expectation for {args:?}"),
    }
}

fn bad_state_file(extension: &str) {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    fs::create_dir_all(project.state_dir()).expect("mkdir .portguard");
    chmod(&project.state_dir(), 0o700);
    let path = project
        .state_dir()
        .join(format!("{FIXTURE_INSTANCE}.{extension}"));
    for bad in [Bad::Fifo, Bad::Sparse] {
        let planted = Planted::new(path.clone(), bad);
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["stop"],
            &["logs"],
            &["serve-safe", "--detach"],
        ] {
            // No log of an earlier start may answer `logs` in place of the planted file.
            let _ = fs::remove_file(project.log_file(FIXTURE_INSTANCE));
            planted.replant(bad);
            let what = format!("`cargo {}` with {bad:?} .{extension}", args.join(" "));
            let (command, bound) = if args[0] == "serve-safe" {
                (project.serve_safe(&args[1..]), START)
            } else {
                (project.portguard(args), QUICK)
            };
            let measured = run_measured(command, bound);
            assert_cheap(&measured, &what, bound);
            let finished = &measured.finished;
            let (code, text) = expected(extension, bad, args);
            let text = text.replace("PATH", &path.to_string_lossy());
            assert_eq!(
                finished.code(),
                Some(code),
                "{what}: {}",
                finished.describe()
            );
            assert!(
                finished.stderr.contains(&text) || finished.stdout.contains(&text),
                "{what} does not say `{text}`: {}",
                finished.describe()
            );
            if args[0] == "logs" && code == 0 {
                assert_eq!(finished.stdout.len() as u64, 8 * 1024 * 1024, "{what}");
            }
            if args[0] == "serve-safe" && code == 0 {
                assert_eq!(finished.stdout.trim(), port.to_string());
                let stopped = run_within(project.portguard(&["stop"]), COMMAND_TIMEOUT);
                assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
            }
            if let Err(left) = project.wait_until_no_process_left(GONE) {
                panic!("processes left behind after {what}: {left:?}");
            }
        }
        drop(planted);
    }
}

#[test]
fn a_bad_record_file_never_hangs_or_is_read_whole() {
    bad_state_file("json");
}

#[test]
fn a_bad_pid_file_never_hangs_or_is_read_whole() {
    bad_state_file("pid");
}

#[test]
fn a_bad_lock_file_never_hangs_or_is_read_whole() {
    bad_state_file("lock");
}

#[test]
fn a_bad_log_file_never_hangs_or_is_read_whole() {
    bad_state_file("log");
}

#[test]
fn a_bad_ended_file_never_hangs_or_is_read_whole() {
    bad_state_file("ended");
}

// ---------------------------------------------------------------------------
// 4. A crashed supervisor whose server's child escaped with the handed socket.

/// The pid of the child the fixture reported on stdout.
fn reported_child(running: &Running) -> u32 {
    let mut child = None;
    let found = wait_until(GONE, || {
        child = running
            .stdout()
            .split("fixture: child pid ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
        child.is_some()
    });
    assert!(found, "no child reported:\n{}", running.stdout());
    child.expect("found above")
}

/// Starts the fixture in socket handoff with a child that leaves the server's session holding
/// the socket, SIGKILLs the supervisor, and waits until only that child is left; returns its
/// pid and the preferred port, which it still holds.
fn crash_leaving_escaped_child(project: &TestProject) -> (u32, u16) {
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let mut running = project.serve(&["--", "--setsid-child"]);
    assert_eq!(ready_port(&running, START), port);
    let child = reported_child(&running);
    let server = project
        .read_pid(FIXTURE_INSTANCE)
        .expect("the running server's pid file");
    running.signal(Signal::KILL);
    assert!(running.wait_exit(GONE).is_some(), "SIGKILL did not end it");
    assert!(
        wait_until(GONE, || !process_alive(server)),
        "the server {server} outlived its killed supervisor"
    );
    assert!(
        process_alive(child),
        "the escaped child {child} is gone already"
    );
    assert!(
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err(),
        "the escaped child does not hold port {port}"
    );
    (child, port)
}

fn assert_warned_about_child(finished: &Finished, child: u32) {
    assert!(
        finished.stderr.lines().any(|line| line.contains("warning:")
            && line.contains(&format!("{child} `"))
            && line.contains("fixture-server")),
        "no warning names the escaped child {child} and its command:\n{}",
        finished.describe()
    );
}

#[test]
fn the_next_start_ends_an_escaped_socket_holder_and_takes_the_same_port() {
    let project = TestProject::fixture();
    let (child, port) = crash_leaving_escaped_child(&project);
    let mut next = project.serve(&[]);
    assert_eq!(
        ready_port(&next, START),
        port,
        "the next start did not take the preferred port:\n{}",
        next.stderr()
    );
    assert!(
        !process_alive(child),
        "the escaped child {child} survived the next start:\n{}",
        next.stderr()
    );
    next.signal(Signal::TERM);
    let status = next.wait_exit(START).expect("serve-safe did not exit");
    let finished = Finished {
        status,
        stdout: next.stdout(),
        stderr: next.stderr(),
    };
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
    assert_warned_about_child(&finished, child);
    if let Err(left) = project.wait_until_no_process_left(GONE) {
        panic!("processes left behind: {left:?}");
    }
    assert!(
        wait_until_port_free(port, GONE),
        "port {port} is still held"
    );
}

#[test]
fn stop_after_a_crash_ends_an_escaped_socket_holder() {
    let project = TestProject::fixture();
    let (child, port) = crash_leaving_escaped_child(&project);
    let stopped = run_within(project.portguard(&["stop"]), COMMAND_TIMEOUT);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    assert!(
        wait_until(GONE, || !process_alive(child)),
        "the escaped child {child} survived `stop`:\n{}",
        stopped.describe()
    );
    assert_warned_about_child(&stopped, child);
    if let Err(left) = project.wait_until_no_process_left(GONE) {
        panic!("processes left behind: {left:?}");
    }
    assert!(
        wait_until_port_free(port, GONE),
        "port {port} is still held"
    );
}

// ---------------------------------------------------------------------------
// 5. The log of a chatty detached server stays bounded.

#[test]
fn a_chatty_servers_log_is_rotated_and_bounded() {
    const LOG_LIMIT: u64 = 8 * 1024 * 1024;
    // One write of the copier, at most.
    const SLACK: u64 = 64 * 1024;
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let started = run_within(
        project.serve_safe(&["--detach", "--", "--print-mib", "20"]),
        START,
    );
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    assert_eq!(started.stdout.trim(), port.to_string());
    let log = project.log_file(FIXTURE_INSTANCE);
    let rotated = project
        .state_dir()
        .join(format!("{FIXTURE_INSTANCE}.log.1"));
    let tail_says_done = || {
        let Ok(mut file) = fs::File::open(&log) else {
            return false;
        };
        let length = file.metadata().map_or(0, |meta| meta.len());
        let mut tail = String::new();
        std::io::Seek::seek(
            &mut file,
            std::io::SeekFrom::Start(length.saturating_sub(4096)),
        )
        .expect("seek the log");
        std::io::Read::read_to_string(&mut file, &mut tail).is_ok()
            && tail.contains("fixture: printed 20 MiB")
    };
    let mut largest = 0;
    let done = wait_until(Duration::from_secs(10), || {
        largest = largest.max(fs::metadata(&log).map_or(0, |meta| meta.len()));
        tail_says_done()
    });
    assert!(
        done,
        "the server never finished printing 20 MiB into the log"
    );
    let current = fs::metadata(&log).expect("the log").len();
    let previous = fs::metadata(&rotated)
        .unwrap_or_else(|err| panic!("no {}: {err}", rotated.display()))
        .len();
    for (what, size) in [
        ("largest seen", largest),
        ("current", current),
        ("rotated", previous),
    ] {
        assert!(
            size <= LOG_LIMIT + SLACK,
            "the {what} log is {size} bytes, over the 8 MiB bound"
        );
    }
    assert!(
        current + previous < 20 * 1024 * 1024,
        "nothing was rotated away: {current} + {previous} bytes"
    );

    let shown = run_within(project.portguard(&["logs"]), QUICK);
    assert_eq!(shown.code(), Some(0), "{}", shown.describe());
    let on_disk = fs::read_to_string(&log).expect("read the log");
    assert!(
        on_disk.starts_with(&shown.stdout) && shown.stdout.contains("fixture: printed 20 MiB"),
        "`logs` did not print the current log ({} bytes shown, {} on disk)",
        shown.stdout.len(),
        on_disk.len()
    );

    let stopped = run_within(project.portguard(&["stop"]), COMMAND_TIMEOUT);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    if let Err(left) = project.wait_until_no_process_left(GONE) {
        panic!("processes left behind: {left:?}");
    }
}

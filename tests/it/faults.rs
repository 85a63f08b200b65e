//! Fault injection: planted links, damaged state, a state folder that is a file or read-only,
//! signal storms, signals during the build or the shutdown, a server whose child keeps its
//! socket, in its process group or out of it. Whatever happens, nothing may be lost: no process
//! left, no port held, no lock or file that blocks the next start, and a message that says what
//! went wrong.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

// Some of these need the child subreaper, which only Linux has.
#[cfg(target_os = "linux")]
mod escaped;

const READY: Duration = Duration::from_mins(1);
const EXIT: Duration = Duration::from_secs(30);
const GONE: Duration = Duration::from_secs(10);

fn start_ready(project: &TestProject, args: &[&str]) -> Running {
    let running = project.serve(args);
    running
        .wait_for_stderr(READY_LINE, READY)
        .unwrap_or_else(|stderr| panic!("server never became ready:\n{stderr}"));
    running
}

/// Nothing of this test runs, `port` is free and no state file is left.
fn assert_nothing_left(project: &TestProject, port: u16) {
    if let Err(left) = project.wait_until_no_process_left(GONE) {
        panic!("processes left behind: {left:?}");
    }
    assert!(
        wait_until_port_free(port, GONE),
        "port {port} is still held"
    );
    for path in [
        project.pid_file(FIXTURE_INSTANCE),
        project.json_file(FIXTURE_INSTANCE),
    ] {
        assert!(
            fs::symlink_metadata(&path).is_err(),
            "{} left behind",
            path.display()
        );
    }
}

/// Stops a running supervisor with SIGTERM: it exits 0 and leaves nothing.
fn stop_cleanly(project: &TestProject, mut running: Running, port: u16) {
    running.signal(Signal::TERM);
    let status = running.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", running.stderr());
    assert_nothing_left(project, port);
}

/// The next start finds no lock or file in its way, serves, and stops cleanly.
fn assert_next_start_works(project: &TestProject, port: u16) {
    let again = start_ready(project, &[]);
    assert!(
        !again.stderr().contains("already running"),
        "{}",
        again.stderr()
    );
    assert_eq!(http_get(port, "/health").map(|r| r.0), Ok(200));
    stop_cleanly(project, again, port);
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|err| panic!("symlink {}: {err}", link.display()));
}

#[test]
fn links_planted_as_state_files_are_replaced_never_followed() {
    const JSON_CONTENT: &str = "{\"keep\": \"me\"}\n";
    const PID_CONTENT: &str = "precious, not a pid\n";
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let outside = tempfile::tempdir().unwrap();
    let json_target = outside.path().join("precious.json");
    let pid_target = outside.path().join("precious.pid");
    fs::write(&json_target, JSON_CONTENT).unwrap();
    fs::write(&pid_target, PID_CONTENT).unwrap();
    fs::create_dir_all(project.state_dir()).unwrap();
    symlink(&json_target, &project.json_file(FIXTURE_INSTANCE));
    symlink(&pid_target, &project.pid_file(FIXTURE_INSTANCE));

    let running = start_ready(&project, &[]);
    assert!(
        running.stderr().contains("removed unreadable state"),
        "the planted links are reported:\n{}",
        running.stderr()
    );
    for path in [
        project.json_file(FIXTURE_INSTANCE),
        project.pid_file(FIXTURE_INSTANCE),
    ] {
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "{} is still a link", path.display());
    }
    assert!(project.read_json(FIXTURE_INSTANCE).is_some());
    assert_eq!(fs::read_to_string(&json_target).unwrap(), JSON_CONTENT);
    assert_eq!(fs::read_to_string(&pid_target).unwrap(), PID_CONTENT);

    stop_cleanly(&project, running, port);
    assert_eq!(fs::read_to_string(&json_target).unwrap(), JSON_CONTENT);
    assert_eq!(fs::read_to_string(&pid_target).unwrap(), PID_CONTENT);
    assert_next_start_works(&project, port);
}

/// Starts over damaged state files (`None`: that file absent): the start works, says it
/// removed unreadable state, never touches pid 1, and leaves nothing behind.
fn starts_over_damaged_state(json: Option<&str>, pid: Option<&str>) {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    fs::create_dir_all(project.state_dir()).expect("create .portguard");
    if let Some(json) = json {
        fs::write(project.json_file(FIXTURE_INSTANCE), json).expect("write .json");
    }
    if let Some(pid) = pid {
        fs::write(project.pid_file(FIXTURE_INSTANCE), pid).expect("write .pid");
    }
    let running = start_ready(&project, &[]);
    let stderr = running.stderr();
    assert!(stderr.contains("removed unreadable state"), "{stderr}");
    assert!(!stderr.contains("pid 1)"), "{stderr}");
    assert!(!stderr.contains("outlived it"), "{stderr}");
    assert!(process_alive(1));
    let record = project.read_json(FIXTURE_INSTANCE).expect("a fresh record");
    assert_eq!(
        record["pid"].as_u64().map(|pid| pid as u32),
        project.read_pid(FIXTURE_INSTANCE)
    );
    stop_cleanly(&project, running, port);
    assert_next_start_works(&project, port);
}

#[test]
fn a_truncated_record_is_reported_and_replaced() {
    starts_over_damaged_state(
        Some("{\n  \"pid\": 1,\n  \"supervisor_pid\": 1,\n  \"port\": 80"),
        Some("1\n"),
    );
}

#[test]
fn an_empty_record_is_reported_and_replaced() {
    starts_over_damaged_state(Some(""), None);
}

#[test]
fn a_binary_garbage_record_is_reported_and_replaced() {
    starts_over_damaged_state(Some("\u{0}\u{1}\u{fffd}garbage\n"), Some("\u{0}\n"));
}

#[test]
fn a_garbage_pid_file_alone_is_reported_and_replaced() {
    starts_over_damaged_state(None, Some("not a pid\n"));
}

#[test]
fn a_pid_file_naming_pid_1_alone_is_reported_and_pid_1_left_alone() {
    starts_over_damaged_state(None, Some("1\n"));
}

#[test]
fn a_well_formed_record_naming_pid_1_never_signals_pid_1() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    // A real record, then rewritten as if pid 1 were the server and its supervisor.
    let running = start_ready(&project, &[]);
    let mut record = project.read_json(FIXTURE_INSTANCE).unwrap();
    stop_cleanly(&project, running, port);
    record["pid"] = 1.into();
    record["supervisor_pid"] = 1.into();
    fs::create_dir_all(project.state_dir()).unwrap();
    fs::write(
        project.json_file(FIXTURE_INSTANCE),
        serde_json::to_string(&record).unwrap(),
    )
    .unwrap();
    fs::write(project.pid_file(FIXTURE_INSTANCE), "1\n").unwrap();

    let running = start_ready(&project, &[]);
    let stderr = running.stderr();
    assert!(stderr.contains("was not shut down cleanly"), "{stderr}");
    assert!(!stderr.contains("outlived it"), "{stderr}");
    assert!(process_alive(1));
    assert_ne!(project.read_pid(FIXTURE_INSTANCE), Some(1));
    stop_cleanly(&project, running, port);
    assert_next_start_works(&project, port);
}

#[test]
fn a_state_folder_that_is_a_file_is_refused_and_nothing_starts() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    fs::write(project.state_dir(), "not a folder\n").unwrap();
    let finished = project.run_serve_safe(&[]);
    assert_ne!(finished.code(), Some(0), "{}", finished.describe());
    assert!(
        finished.stderr.contains(".portguard"),
        "the message names the folder:\n{}",
        finished.describe()
    );
    assert!(
        !finished.stderr.contains("Running on"),
        "{}",
        finished.describe()
    );
    assert_nothing_left(&project, port);
    assert_eq!(
        fs::read_to_string(project.state_dir()).unwrap(),
        "not a folder\n",
        "the file in the way is left as it was"
    );
}

/// A read-only `.portguard/` (mode 555) that already holds a lock file: the lock could be
/// taken, but no record written. Root writes there all the same, so where the tests run as
/// root (without `CAP_DAC_OVERRIDE` dropped) the case cannot be made and is skipped.
#[test]
fn a_read_only_state_folder_is_refused_and_nothing_starts() {
    use std::os::unix::fs::PermissionsExt as _;

    /// Makes the folder writable again, so that the temp dir can be removed whatever happens.
    struct Writable<'a>(&'a Path);
    impl Drop for Writable<'_> {
        fn drop(&mut self) {
            let _ = fs::set_permissions(self.0, fs::Permissions::from_mode(0o755));
        }
    }

    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let state = project.state_dir();
    fs::create_dir_all(&state).unwrap();
    fs::write(project.lock_file(FIXTURE_INSTANCE), "").unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o555)).unwrap();
    let _writable = Writable(&state);
    let probe = state.join("probe");
    if fs::write(&probe, "").is_ok() {
        fs::remove_file(&probe).unwrap();
        eprintln!("a read-only folder stops no write here (root): skipped");
        return;
    }

    let finished = project.run_serve_safe(&[]);
    // exit_codes::FAILURE
    assert_eq!(finished.code(), Some(1), "{}", finished.describe());
    assert!(
        finished.stderr.contains("the state folder `")
            && finished.stderr.contains(".portguard` is not writable"),
        "the message names the folder:\n{}",
        finished.describe()
    );
    assert!(
        !finished.stderr.contains("Starting"),
        "{}",
        finished.describe()
    );
    assert_nothing_left(&project, port);
    let files: Vec<String> = fs::read_dir(&state)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        [format!("{FIXTURE_INSTANCE}.lock")],
        "nothing written"
    );
}

#[test]
fn a_storm_of_twenty_sigints_ends_in_a_clean_exit() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let mut running = start_ready(&project, &[]);
    for _ in 0..20 {
        running.signal(Signal::INT);
    }
    let status = running.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", running.stderr());
    assert_nothing_left(&project, port);
    assert_next_start_works(&project, port);
}

#[test]
fn sigterm_during_the_build_leaves_no_cargo_rustc_or_server() {
    // A target dir of its own, so that the first start has to compile.
    let project = TestProject::fixture().own_target_dir();
    let port = project.set_metadata_on_free_port("");
    let mut running = project.serve(&[]);
    running
        .wait_for_stderr("Compiling", READY)
        .unwrap_or_else(|stderr| panic!("no build seen:\n{stderr}"));
    running.signal(Signal::TERM);
    let status = running
        .wait_exit(EXIT)
        .expect("serve-safe did not exit on SIGTERM during the build");
    let stderr = running.stderr();
    assert!(!stderr.contains("Running on"), "{stderr}");
    assert_eq!(
        status.code(),
        Some(0),
        "a requested stop exits 0:\n{stderr}"
    );
    assert!(
        stderr.contains("Stopping"),
        "the stop is reported:\n{stderr}"
    );
    assert_nothing_left(&project, port);
    assert_next_start_works(&project, port);
}

/// Starts the fixture with `fork_option` and returns the supervisor, the server's pid and its
/// child's, checking that the child runs.
fn start_with_child(project: &TestProject, fork_option: &str) -> (Running, u32, u32) {
    let running = start_ready(project, &["--", fork_option]);
    let stdout = running
        .wait_for_stdout("fixture: child pid ", EXIT)
        .unwrap_or_else(|stdout| panic!("the child was not started:\n{stdout}"));
    let child: u32 = stdout
        .split("fixture: child pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no child pid in {stdout:?}"));
    assert!(process_alive(child), "the child {child} is not running");
    let server = project
        .read_pid(FIXTURE_INSTANCE)
        .expect("a .pid file while running");
    (running, server, child)
}

fn stop_ends_a_forked_child(metadata: &str, fork_option: &str) {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port(metadata);
    let (running, _, child) = start_with_child(&project, fork_option);
    stop_ends_child(&project, running, child, port);
}

/// `stop`: the supervisor exits 0, `child` is gone, nothing is left and the next start works.
fn stop_ends_child(project: &TestProject, mut running: Running, child: u32, port: u16) {
    let stopped = project.run_portguard(&["stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    let status = running.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", running.stderr());
    assert!(
        wait_until(GONE, || !process_alive(child)),
        "the server's child {child} survived the stop"
    );
    assert_nothing_left(project, port);
    assert_next_start_works(project, port);
}

#[test]
fn stop_ends_a_forked_child_holding_the_bound_port() {
    stop_ends_a_forked_child("", "--fork-child");
}

#[test]
fn stop_ends_a_forked_child_holding_the_handed_socket() {
    stop_ends_a_forked_child("handoff = \"socket\"", "--fork-child");
}

#[test]
fn stop_ends_a_forked_child_that_ignores_sigterm() {
    stop_ends_a_forked_child(
        "shutdown-timeout-ms = 1000",
        "--fork-child-ignoring-sigterm",
    );
}

#[test]
fn a_crashed_server_leaves_no_forked_child() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (running, server, child) = start_with_child(&project, "--fork-child");
    crash_server_and_check_its_child_is_gone(&project, running, server, child, port);
}

/// Kills `server` behind portguard's back, as the OOM killer would, and checks that its
/// `child` goes with it, the supervisor reports the signal and the next start works.
fn crash_server_and_check_its_child_is_gone(
    project: &TestProject,
    mut running: Running,
    server: u32,
    child: u32,
    port: u16,
) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server as i32).expect("a server pid is positive"),
        Signal::KILL,
    )
    .expect("kill the server");
    let status = running.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(128 + 9), "{}", running.stderr());
    assert!(
        wait_until(GONE, || !process_alive(child)),
        "the crashed server's child {child} survived:\n{}",
        running.stderr()
    );
    assert_nothing_left(project, port);
    assert_next_start_works(project, port);
}

#[test]
fn sigkill_to_the_supervisor_leaves_no_forked_child() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (mut running, server, child) = start_with_child(&project, "--fork-child");
    running.signal(Signal::KILL);
    running
        .wait_exit(EXIT)
        .expect("the supervisor survived SIGKILL");
    assert!(
        wait_until(GONE, || !process_alive(server)),
        "server pid {server} outlived its SIGKILLed supervisor"
    );
    // The child holds the port; at the latest the next start must end it.
    let again = start_ready(&project, &[]);
    let stderr = again.stderr();
    assert!(stderr.contains("was not shut down cleanly"), "{stderr}");
    assert!(
        !process_alive(child),
        "the child {child} of the SIGKILLed supervisor's server still runs after the next \
         start:\n{stderr}"
    );
    assert_eq!(
        project.read_json(FIXTURE_INSTANCE).unwrap()["port"],
        port,
        "the next start could not have its port back:\n{stderr}"
    );
    stop_cleanly(&project, again, port);
}

#[test]
fn sigkill_to_the_supervisor_during_shutdown_leaves_nothing() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("shutdown-timeout-ms = 60000");
    let mut running = start_ready(&project, &["--", "--ignore-sigterm"]);
    let pid = project.read_pid(FIXTURE_INSTANCE).unwrap();
    running.signal(Signal::TERM);
    running
        .wait_for_stderr("Stopping server", EXIT)
        .expect("SIGTERM starts the stop");
    running.signal(Signal::KILL);
    running
        .wait_exit(EXIT)
        .expect("the supervisor survived SIGKILL");
    assert!(
        wait_until(GONE, || !process_alive(pid)),
        "server pid {pid} outlived its SIGKILLed supervisor"
    );
    if let Err(left) = project.wait_until_no_process_left(GONE) {
        panic!("processes left behind: {left:?}");
    }
    assert!(wait_until_port_free(port, GONE), "port {port} still held");
    // The killed supervisor could not remove its files: the next start reports them.
    let again = start_ready(&project, &[]);
    assert!(
        again.stderr().contains("was not shut down cleanly"),
        "{}",
        again.stderr()
    );
    stop_cleanly(&project, again, port);
}

#[test]
fn sigkill_to_the_supervisor_during_the_build_leaves_nothing_after_the_next_start() {
    // A target dir of its own, so that the first start has to compile.
    let project = TestProject::fixture().own_target_dir();
    let port = project.set_metadata_on_free_port("");
    let mut running = project.serve(&[]);
    running
        .wait_for_stderr("Compiling", READY)
        .unwrap_or_else(|stderr| panic!("no build seen:\n{stderr}"));
    running.signal(Signal::KILL);
    running
        .wait_exit(EXIT)
        .expect("the supervisor survived SIGKILL");
    // cargo dies with its supervisor (parent-death signal); the rustc it started may still be
    // finishing a crate. The next start must end whatever is left of that build, build again
    // and serve.
    let again = start_ready(&project, &[]);
    assert_eq!(
        project.read_json(FIXTURE_INSTANCE).unwrap()["port"],
        port,
        "the next start did not get its port:\n{}",
        again.stderr()
    );
    stop_cleanly(&project, again, port);
}

#[test]
fn sigkill_to_the_supervisor_before_the_server_is_ready_leaves_nothing() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    // The server binds three seconds after it starts: it runs, but is not ready yet.
    let mut running = project.serve(&["--", "--delay-ms", "3000"]);
    assert!(
        wait_until(READY, || project.read_pid(FIXTURE_INSTANCE).is_some()),
        "the start never recorded its server:\n{}",
        running.stderr()
    );
    let pid = project.read_pid(FIXTURE_INSTANCE).unwrap();
    assert!(
        !running.stderr().contains("Running on"),
        "ready too soon: {}",
        running.stderr()
    );
    running.signal(Signal::KILL);
    running
        .wait_exit(EXIT)
        .expect("the supervisor survived SIGKILL");
    assert!(
        wait_until(GONE, || !process_alive(pid)),
        "server pid {pid} outlived its SIGKILLed supervisor"
    );
    if let Err(left) = project.wait_until_no_process_left(GONE) {
        panic!("processes left behind: {left:?}");
    }
    assert!(wait_until_port_free(port, GONE), "port {port} still held");
    assert_next_start_works(&project, port);
}

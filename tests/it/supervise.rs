//! Supervision end to end: signals reach the server, exit codes follow the contract, and every
//! way a run ends leaves no process, no state file and no lock that blocks the next start.

use std::time::{Duration, Instant};

use crate::support::*;

const READY: Duration = Duration::from_mins(1);
const EXIT: Duration = Duration::from_secs(30);

/// Starts the fixture under portguard and waits until it answers; returns the server's pid.
fn start_ready(project: &TestProject, args: &[&str]) -> (Running, u32) {
    let running = project.serve(args);
    running
        .wait_for_stderr("Running on http://", READY)
        .unwrap_or_else(|stderr| panic!("server never became ready:\n{stderr}"));
    let pid = project
        .read_pid(FIXTURE_INSTANCE)
        .expect("a .pid file while running");
    assert!(
        process_alive(pid),
        "the recorded server pid {pid} is not alive"
    );
    (running, pid)
}

/// What every clean ending must leave: no server, no state files, a free port.
fn assert_cleaned_up(project: &TestProject, server_pid: u32, port: u16) {
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(server_pid)),
        "server pid {server_pid} still alive"
    );
    assert!(
        !project.pid_file(FIXTURE_INSTANCE).exists(),
        ".pid left behind"
    );
    assert!(
        !project.json_file(FIXTURE_INSTANCE).exists(),
        ".json left behind"
    );
    assert!(
        wait_until_port_free(port, Duration::from_secs(5)),
        "port {port} still held"
    );
}

/// A second run must start where the first one left off.
fn assert_next_start_works(project: &TestProject) {
    let (mut again, pid) = start_ready(project, &[]);
    again.signal(Signal::TERM);
    assert_eq!(again.wait_exit(EXIT).map(|s| s.code()), Some(Some(0)));
    assert!(wait_until(Duration::from_secs(5), || !process_alive(pid)));
}

fn stops_on(signal: Signal, whole_group: bool) {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let (mut running, pid) = start_ready(&project, &[]);
    assert_eq!(http_get(port, "/health").map(|r| r.0), Ok(200));
    if whole_group {
        // What a terminal's Ctrl-C does: the signal goes to the foreground process group.
        running.signal_group(signal);
    } else {
        running.signal(signal);
    }
    let status = running.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", running.stderr());
    let stderr = running.stderr();
    assert!(
        stderr.contains(&format!("Stopping server (pid {pid})")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Stopped server (pid {pid})")),
        "{stderr}"
    );
    assert_cleaned_up(&project, pid, port);
}

#[test]
fn sigterm_stops_the_server_and_cleans_up() {
    stops_on(Signal::TERM, false);
}

#[test]
fn ctrl_c_stops_the_server_and_cleans_up() {
    stops_on(Signal::INT, true);
}

#[test]
fn sighup_stops_the_server_and_cleans_up() {
    stops_on(Signal::HUP, false);
}

#[test]
fn sigkill_to_the_supervisor_leaves_no_server_and_the_next_start_works() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (mut running, pid) = start_ready(&project, &[]);
    running.signal(Signal::KILL);
    running
        .wait_exit(EXIT)
        .expect("the supervisor survived SIGKILL");
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(pid)),
        "server pid {pid} outlived its SIGKILLed supervisor"
    );
    assert!(wait_until_port_free(port, Duration::from_secs(5)));
    // The dead supervisor's files are still there: the next start reports and replaces them.
    assert!(project.json_file(FIXTURE_INSTANCE).exists());
    let (mut again, new_pid) = start_ready(&project, &[]);
    assert_ne!(new_pid, pid);
    let stderr = again.stderr();
    assert!(stderr.contains("was not shut down cleanly"), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    again.signal(Signal::TERM);
    assert_eq!(again.wait_exit(EXIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn a_server_that_exits_by_itself_passes_its_code_through() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let mut running = project.serve(&["--", "--exit-code", "7"]);
    let status = running.wait_exit(READY).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(7), "stderr:\n{}", running.stderr());
    let stderr = running.stderr();
    assert!(
        stderr.contains("exited with exit status 7 before the server was ready"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Running on"),
        "claimed readiness:\n{stderr}"
    );
    assert!(!project.json_file(FIXTURE_INSTANCE).exists());
    assert!(!project.pid_file(FIXTURE_INSTANCE).exists());
    assert!(wait_until_port_free(port, Duration::from_secs(5)));
    assert_next_start_works(&project);
}

#[test]
fn a_server_killed_by_a_signal_gives_128_plus_the_signal() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let (mut running, pid) = start_ready(&project, &[]);
    // Killed behind portguard's back, as the OOM killer would.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        Signal::KILL,
    )
    .unwrap();
    let status = running.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(
        status.code(),
        Some(128 + 9),
        "stderr:\n{}",
        running.stderr()
    );
    assert!(
        running.stderr().contains("signal 9 (SIGKILL)"),
        "{}",
        running.stderr()
    );
    assert!(!project.json_file(FIXTURE_INSTANCE).exists());
}

#[test]
fn a_build_error_gives_cargos_exit_code_and_clean_state() {
    let project = TestProject::broken();
    project.set_metadata_on_free_port("");
    let output = project.serve_safe(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(101), "stderr:\n{stderr}");
    assert!(
        stderr.contains("error[E0308]"),
        "cargo's own error is shown:\n{stderr}"
    );
    assert!(stderr.contains("before the server was ready"), "{stderr}");
    assert!(!project.json_file("broken-server").exists());
    assert!(!project.pid_file("broken-server").exists());
    // The lock was released: a second attempt fails the same way, not with "already running".
    let again = project.serve_safe(&[]).output().unwrap();
    assert_eq!(again.status.code(), Some(101));
}

#[test]
fn a_server_that_ignores_sigterm_is_killed_after_the_timeout() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("shutdown-timeout-ms = 500");
    let (mut running, pid) = start_ready(&project, &["--", "--ignore-sigterm"]);
    let asked = Instant::now();
    running.signal(Signal::TERM);
    let status = running.wait_exit(EXIT).expect("serve-safe did not exit");
    let took = asked.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "a requested stop exits 0:\n{}",
        running.stderr()
    );
    assert!(
        took >= Duration::from_millis(500),
        "SIGKILL came before the grace period: {took:?}"
    );
    assert!(
        running.stderr().contains("did not stop within 0.5s"),
        "{}",
        running.stderr()
    );
    assert_cleaned_up(&project, pid, port);
}

#[test]
fn a_second_ctrl_c_skips_the_grace_period() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("shutdown-timeout-ms = 60000");
    let (mut running, pid) = start_ready(&project, &["--", "--ignore-sigterm"]);
    running.signal_group(Signal::INT);
    running
        .wait_for_stderr("Stopping server", EXIT)
        .expect("the first Ctrl-C starts the stop");
    running.signal_group(Signal::INT);
    let status = running
        .wait_exit(EXIT)
        .expect("the second Ctrl-C did not end it");
    assert_eq!(status.code(), Some(0));
    assert!(
        running.stderr().contains("sent SIGKILL"),
        "{}",
        running.stderr()
    );
    assert_cleaned_up(&project, pid, port);
}

#[test]
fn ready_is_announced_only_once_the_server_answers() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("handoff = \"socket\"");
    // The socket accepts connections at once; the server only after two seconds.
    let started = Instant::now();
    let running = project.serve(&["--", "--delay-ms", "2000"]);
    running
        .wait_for_stderr("Running on", READY)
        .unwrap_or_else(|stderr| panic!("never ready:\n{stderr}"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "announced after {waited:?}, before the server could answer"
    );
}

#[test]
fn server_arguments_after_double_dash_reach_the_server() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (_running, _pid) = start_ready(&project, &["--", "--flag", "two words"]);
    let (_, body) = http_get(port, "/info").unwrap();
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    let args = info["args"].as_array().unwrap();
    assert!(args.iter().any(|a| a == "--flag"), "{info}");
    assert!(args.iter().any(|a| a == "two words"), "{info}");
}

#[test]
fn the_server_runs_in_its_own_process_group() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (running, pid) = start_ready(&project, &[]);
    let (_, body) = http_get(port, "/info").unwrap();
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        info["pid"], pid,
        "`cargo run` replaced itself with the server"
    );
    assert_eq!(info["pgid"], pid, "the server leads a group of its own");
    assert_eq!(info["ppid"], running.pid(), "the supervisor is the parent");
}

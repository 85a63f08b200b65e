//! `cargo serve-safe --detach`: it returns once the server is ready, with only the port on
//! stdout, or fails with the reason and leaves nothing behind; `cargo portguard logs` shows
//! what the detached server wrote.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

/// What a successful `--detach` leaves: a port, and the instance's supervisor and server.
struct Detached {
    port: u16,
    pid: u32,
    supervisor_pid: u32,
}

/// `serve-safe --detach ARGS`, which must succeed.
fn detach(project: &TestProject, args: &[&str]) -> Detached {
    let mut all = vec!["--detach"];
    all.extend_from_slice(args);
    let started = project.run_serve_safe(&all);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    let port: u16 = started
        .stdout
        .strip_suffix('\n')
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("stdout is not a port and a newline: {:?}", started.stdout));
    let record = project.read_json(FIXTURE_INSTANCE).expect("a .json");
    assert_eq!(record["port"], port, "{record}");
    Detached {
        port,
        pid: project.read_pid(FIXTURE_INSTANCE).expect("a .pid"),
        supervisor_pid: record["supervisor_pid"].as_u64().expect("a pid") as u32,
    }
}

/// `portguard stop`, which must leave nothing running, nothing on the port, no state files.
fn stop_and_check(project: &TestProject, detached: &Detached) {
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(!process_alive(detached.pid), "the server survived stop");
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(
            detached.supervisor_pid
        )),
        "the detached supervisor survived stop"
    );
    assert!(wait_until_port_free(detached.port, Duration::from_secs(5)));
    assert_nothing_left(project);
}

/// No process of this test, and no state file but the lock and the log.
fn assert_nothing_left(project: &TestProject) {
    project
        .wait_until_no_process_left(Duration::from_secs(10))
        .unwrap_or_else(|left| panic!("still running: {left:?}"));
    assert!(!project.json_file(FIXTURE_INSTANCE).exists(), ".json left");
    assert!(!project.pid_file(FIXTURE_INSTANCE).exists(), ".pid left");
}

/// The next start of the instance works, and stops cleanly.
fn assert_next_start_works(project: &TestProject) {
    let again = detach(project, &[]);
    assert_eq!(http_get(again.port, "/health").map(|r| r.0), Ok(200));
    stop_and_check(project, &again);
}

#[test]
fn detach_prints_only_the_port_and_leaves_the_server_running() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let started = project.run_serve_safe(&["--detach"]);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    assert_eq!(
        started.stdout,
        format!("{port}\n"),
        "{}",
        started.describe()
    );

    // The server answers, and it is the one recorded.
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    assert_eq!(info(port)["pid"], pid);
    let record = project.read_json(FIXTURE_INSTANCE).expect("a .json");
    let supervisor_pid = record["supervisor_pid"].as_u64().expect("a pid") as u32;
    assert!(process_alive(supervisor_pid), "the supervisor stays");

    let status = project.run_portguard(&["status", "--json"]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    let json: Value = serde_json::from_str(&status.stdout).expect("JSON");
    assert_eq!(json["instances"][0]["state"], "running", "{json}");
    assert_eq!(json["instances"][0]["port"], port, "{json}");
    assert_eq!(json["instances"][0]["pid"], pid, "{json}");

    stop_and_check(
        &project,
        &Detached {
            port,
            pid,
            supervisor_pid,
        },
    );
}

#[test]
fn detach_json_prints_one_status_entry() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let started = project.run_serve_safe(&["--detach", "--json"]);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    assert_eq!(
        started.stdout.lines().count(),
        1,
        "one line: {}",
        started.describe()
    );
    let entry: Value = serde_json::from_str(&started.stdout)
        .unwrap_or_else(|err| panic!("not one JSON object ({err}): {}", started.describe()));
    let record = project.read_json(FIXTURE_INSTANCE).expect("a .json");
    assert_eq!(entry["instance"], FIXTURE_INSTANCE, "{entry}");
    assert_eq!(entry["state"], "running", "{entry}");
    assert_eq!(entry["port"], port, "{entry}");
    assert_eq!(entry["pid"], record["pid"], "{entry}");
    assert_eq!(entry["supervisor_pid"], record["supervisor_pid"], "{entry}");
    assert_eq!(entry["url"], format!("http://127.0.0.1:{port}"), "{entry}");
    assert_eq!(entry["handoff"], "socket", "{entry}");
    assert_eq!(entry["health"], "unknown", "no health-path: {entry}");
    assert_eq!(sorted_keys(&entry), sorted(&RUNNING_ENTRY_KEYS), "{entry}");
    assert_eq!(info(port)["pid"], record["pid"]);
    let detached = Detached {
        port,
        pid: record["pid"].as_u64().expect("a pid") as u32,
        supervisor_pid: record["supervisor_pid"].as_u64().expect("a pid") as u32,
    };
    stop_and_check(&project, &detached);
}

#[test]
fn detach_of_a_server_that_crashes_at_start_fails_with_its_code_and_log() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let started = project.run_serve_safe(&["--detach", "--", "--exit-code", "7"]);
    assert_eq!(started.code(), Some(7), "{}", started.describe());
    assert!(started.stdout.is_empty(), "no port: {}", started.describe());
    // The server's own last words, from the log.
    assert!(
        started
            .stderr
            .contains("fixture: exiting with code 7 as asked"),
        "{}",
        started.describe()
    );
    assert_nothing_left(&project);
    assert!(wait_until_port_free(port, Duration::from_secs(5)));
    assert_next_start_works(&project);
}

#[test]
fn detach_of_a_project_that_does_not_build_fails_with_cargos_code_and_error() {
    let project = TestProject::broken();
    project.set_metadata_on_free_port("");
    let started = project.run_serve_safe(&["--detach"]);
    assert_eq!(started.code(), Some(101), "{}", started.describe());
    assert!(started.stdout.is_empty(), "no port: {}", started.describe());
    assert!(
        started.stderr.contains("error[E0308]"),
        "the compiler's error, from the log: {}",
        started.describe()
    );
    project
        .wait_until_no_process_left(Duration::from_secs(10))
        .unwrap_or_else(|left| panic!("still running: {left:?}"));
    assert!(!project.json_file("broken-server").exists());
    assert!(!project.pid_file("broken-server").exists());
}

#[test]
fn detach_of_a_server_that_never_becomes_healthy_gives_up_and_leaves_nothing() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port(
        "handoff = \"socket\"\nhealth-path = \"/health\"\nready-timeout-ms = 2000",
    );
    let health_file = project.dir.path().join("health-status");
    std::fs::write(&health_file, "503").expect("write the health file");
    let health_arg = health_file.to_str().expect("UTF-8 temp path");

    let asked = Instant::now();
    let started = project.run_serve_safe(&["--detach", "--", "--health-file", health_arg]);
    let took = asked.elapsed();
    assert_ne!(started.code(), Some(0), "{}", started.describe());
    assert!(started.code().is_some(), "{}", started.describe());
    assert!(started.stdout.is_empty(), "no port: {}", started.describe());
    assert!(
        took >= Duration::from_secs(2),
        "gave up before ready-timeout-ms: {took:?}"
    );
    // The server did start: its log says so.
    assert!(
        started.stderr.contains("fixture: listening"),
        "{}",
        started.describe()
    );
    assert_nothing_left(&project);
    assert!(wait_until_port_free(port, Duration::from_secs(5)));

    // Healthy now: the same start succeeds.
    std::fs::write(&health_file, "200").expect("write the health file");
    let again = detach(&project, &["--", "--health-file", health_arg]);
    assert_eq!(again.port, port);
    stop_and_check(&project, &again);
}

#[test]
fn detach_works_inside_command_substitution() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let script = r#"PORT=$("$0" serve-safe --detach) || exit 1
case $PORT in ''|*[!0-9]*) echo "not a port: '$PORT'"; exit 9;; esac
echo "port=$PORT""#;
    let serve_safe = serve_safe_bin();
    let serve_safe = serve_safe.to_str().expect("UTF-8 path");
    let finished = run_within(
        project.command("sh", &["-c", script, serve_safe]),
        COMMAND_TIMEOUT,
    );
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
    assert_eq!(finished.stdout, format!("port={port}\n"));
    assert_eq!(http_get(port, "/health").map(|r| r.0), Ok(200));
    let detached = Detached {
        port,
        pid: project.read_pid(FIXTURE_INSTANCE).expect("a .pid"),
        supervisor_pid: project.read_json(FIXTURE_INSTANCE).expect("a .json")["supervisor_pid"]
            .as_u64()
            .expect("a pid") as u32,
    };
    stop_and_check(&project, &detached);
}

#[test]
fn logs_shows_the_detached_servers_output() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let detached = detach(&project, &[]);
    let logs = project.run_portguard(&["logs"]);
    assert_eq!(logs.code(), Some(0), "{}", logs.describe());
    assert!(
        logs.stdout.contains(&format!(
            "fixture: listening on 127.0.0.1:{}",
            detached.port
        )),
        "{}",
        logs.describe()
    );
    let named = project.run_portguard(&["logs", "--instance", FIXTURE_INSTANCE]);
    assert_eq!(named.code(), Some(0), "{}", named.describe());
    assert_eq!(named.stdout, logs.stdout);
    stop_and_check(&project, &detached);
}

#[test]
fn logs_follow_prints_until_the_instance_stops() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let detached = detach(&project, &[]);
    let mut follow = start_background(project.portguard(&["logs", "-f"]));
    follow
        .wait_for_stdout("fixture: listening", Duration::from_secs(30))
        .unwrap_or_else(|stdout| panic!("logs -f showed no server output: {stdout}"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(follow.is_running(), "logs -f ended while the server runs");

    stop_and_check(&project, &detached);
    let status = follow
        .wait_exit(Duration::from_secs(30))
        .expect("logs -f did not end after the instance stopped");
    assert_eq!(status.code(), Some(0), "{}", follow.stderr());
    let out = follow.stdout();
    assert!(out.contains("fixture: listening"), "{out}");
    // Written by the supervisor after `logs -f` started: it followed the log to its end.
    assert!(
        out.contains(&format!("Stopped server (pid {})", detached.pid)),
        "{out}"
    );
}

#[test]
fn ready_1_on_notify_socket_counts_as_ready_in_socket_handoff() {
    let project = TestProject::fixture();
    // Bounded, so a failure is an error rather than a five-minute wait.
    let port = project.set_metadata_on_free_port("handoff = \"socket\"\nready-timeout-ms = 60000");
    // The socket accepts connections in the kernel, but the server never takes one: no probe
    // can get an answer, only the notify message can tell portguard it is ready.
    let detached = detach(&project, &["--", "--notify-ready", "--never-accept"]);
    assert_eq!(detached.port, port);
    let log = std::fs::read_to_string(project.log_file(FIXTURE_INSTANCE)).expect("a log");
    assert!(log.contains("fixture: sent READY=1"), "{log}");
    let status = project.run_portguard(&["status", "--json"]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    stop_and_check(&project, &detached);
}

#[test]
fn a_server_that_never_accepts_and_never_notifies_is_not_ready() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("handoff = \"socket\"\nready-timeout-ms = 2000");
    let started = project.run_serve_safe(&["--detach", "--", "--never-accept"]);
    assert_eq!(started.code(), Some(1), "{}", started.describe());
    assert!(started.stdout.is_empty(), "{}", started.describe());
    assert_nothing_left(&project);
}

#[test]
fn dropping_the_test_project_ends_a_detached_instance() {
    // The harness's own guard: a detached supervisor runs in a session of its own, where no
    // `Running` guard reaches it.
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let detached = detach(&project, &[]);
    assert!(process_alive(detached.supervisor_pid) && process_alive(detached.pid));
    drop(project);
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(
            detached.supervisor_pid
        ) && !process_alive(
            detached.pid
        )),
        "the detached instance outlived its test project"
    );
    assert!(wait_until_port_free(detached.port, Duration::from_secs(5)));
}

/// `--detach` of a server slow to listen, stopped by `stop` while it waits: it fails with
/// code 1, nothing on stdout, the reason on stderr, and the lock already free.
fn detach_stopped_before_ready(stop: impl FnOnce(&TestProject, u32)) {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let mut start =
        start_background(project.serve_safe(&["--detach", "--", "--delay-ms", "60000"]));
    let mut record = None;
    assert!(
        wait_until(READY_TIMEOUT, || {
            record = project
                .read_json(FIXTURE_INSTANCE)
                .filter(|record| record["pid"].as_u64().is_some_and(|pid| pid > 0));
            record.is_some()
        }),
        "the background supervisor never recorded its server:\n{}",
        start.stderr()
    );
    let record = record.expect("found above");
    assert_eq!(record["ready"], false, "{record}");
    let supervisor = record["supervisor_pid"].as_u64().expect("a pid") as u32;
    let server = record["pid"].as_u64().expect("a pid") as u32;

    stop(&project, supervisor);
    let status = start
        .wait_exit(COMMAND_TIMEOUT)
        .expect("--detach did not return");
    // Looked at before anything else runs: the lock must be free when --detach returns.
    let lock = std::fs::File::open(project.lock_file(FIXTURE_INSTANCE)).expect("the lock file");
    let free = fs4::FileExt::try_lock(&lock).is_ok();
    drop(lock);
    assert_eq!(status.code(), Some(1), "{}", start.stderr());
    assert!(free, "--detach returned while the lock was held");
    assert!(start.stdout().is_empty(), "no port: {}", start.stdout());
    assert!(
        start
            .stderr()
            .contains("the server was stopped before it was ready"),
        "names the reason:\n{}",
        start.stderr()
    );
    assert!(!process_alive(server), "the server survived");
    let status = project.run_portguard(&["status"]);
    assert_eq!(status.code(), Some(3), "{}", status.describe());
    assert!(!status.stdout.contains("stale"), "{}", status.describe());
    assert_nothing_left(&project);
    assert_next_start_works(&project);
}

#[test]
fn detach_stopped_by_portguard_stop_before_ready_fails_and_frees_the_lock() {
    detach_stopped_before_ready(|project, _| {
        let stop = project.run_portguard(&["stop"]);
        assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    });
}

#[test]
fn detach_whose_supervisor_gets_sigterm_before_ready_fails_and_frees_the_lock() {
    detach_stopped_before_ready(|_, supervisor| {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(supervisor as i32).expect("a pid"),
            Signal::TERM,
        )
        .expect("SIGTERM the background supervisor");
    });
}

#[test]
fn detach_shows_the_build_on_stderr_and_only_the_port_on_stdout() {
    // A target dir of its own: the fixture has to be compiled.
    let project = TestProject::fixture().own_target_dir();
    let port = project.set_metadata_on_free_port("");
    let started = project.run_serve_safe(&["--detach"]);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    assert_eq!(
        started.stdout,
        format!("{port}\n"),
        "{}",
        started.describe()
    );
    // Not a terminal: one plain line a step, in cargo's style, before the verdict.
    let compiling = started
        .stderr
        .find("   Compiling fixture-server v")
        .unwrap_or_else(|| panic!("no progress: {}", started.describe()));
    let detached = started
        .stderr
        .find("Detached supervisor pid")
        .unwrap_or_else(|| panic!("no Detached line: {}", started.describe()));
    assert!(compiling < detached, "{}", started.describe());
    assert!(
        started.stderr.contains("   Compiling server-core v"),
        "{}",
        started.describe()
    );
    // Only the build's progress: not its end, nor the server's output.
    for other in ["Finished", "Running", "Starting", "fixture: listening"] {
        assert!(
            !started.stderr.contains(other),
            "{other}: {}",
            started.describe()
        );
    }
    assert!(!started.stderr.contains('\r'), "{}", started.describe());
    let record = project.read_json(FIXTURE_INSTANCE).expect("a .json");
    let detached = Detached {
        port,
        pid: project.read_pid(FIXTURE_INSTANCE).expect("a .pid"),
        supervisor_pid: record["supervisor_pid"].as_u64().expect("a pid") as u32,
    };
    stop_and_check(&project, &detached);

    // A touched source is compiled again; cargo's switch for its progress bar silences it.
    let main = project.read_file("src/main.rs");
    project.write_file("src/main.rs", format!("{main}\n"));
    let mut quiet = project.serve_safe(&["--detach"]);
    quiet.env("CARGO_TERM_PROGRESS_WHEN", "never");
    let started = run_within(quiet, COMMAND_TIMEOUT);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    assert_eq!(
        started.stdout,
        format!("{port}\n"),
        "{}",
        started.describe()
    );
    assert!(
        !started.stderr.contains("Compiling"),
        "{}",
        started.describe()
    );
    let log = std::fs::read_to_string(project.log_file(FIXTURE_INSTANCE)).expect("the log");
    assert!(log.contains("Compiling fixture-server"), "{log}");
    let record = project.read_json(FIXTURE_INSTANCE).expect("a .json");
    stop_and_check(
        &project,
        &Detached {
            port,
            pid: project.read_pid(FIXTURE_INSTANCE).expect("a .pid"),
            supervisor_pid: record["supervisor_pid"].as_u64().expect("a pid") as u32,
        },
    );
}

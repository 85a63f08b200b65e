//! A server that does not take the port portguard gave it (it binds an address of its own, as
//! axum's hello world binds `0.0.0.0:3000`): the supervisor says where it listens instead, a
//! detached start fails early with that, and `status` shows it; a server that is only slow to
//! start, or listens on an admin port besides its own, is left alone.

use std::time::{Duration, Instant};

use crate::support::*;

/// Well within the default `ready-timeout-ms` (300 s): the diagnosis comes about two seconds
/// after the server listens.
const DIAGNOSIS_WITHIN: Duration = Duration::from_secs(8);

/// A detached start that fails on the diagnosis returns this fast (the fixture is built).
const DETACH_FAILS_WITHIN: Duration = Duration::from_secs(45);

const LISTENING: &str = "fixture: listening on ";

/// Part of every diagnosis.
const DIAGNOSIS: &str = "listens on";

const STATUS_FLAG: &str = "NOT SERVING ITS PORT";

/// A fixture project with `handoff` and a preferred port that was free; returns the port.
fn project(handoff: &str) -> (TestProject, u16) {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port(&format!("handoff = \"{handoff}\""));
    (project, port)
}

/// The address and pid in the fixture's `listening on ADDR pid PID` line.
fn listening(server: &Running) -> (String, u32) {
    server
        .wait_for_stdout(LISTENING, READY_TIMEOUT)
        .unwrap_or_else(|stdout| panic!("the fixture never listened; stdout:\n{stdout}"));
    let mut line = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let stdout = server.stdout();
            let start = stdout.find(LISTENING).expect("found above");
            match stdout[start..].split_once('\n') {
                Some((found, _)) => {
                    found.clone_into(&mut line);
                    true
                }
                None => false,
            }
        }),
        "the listening line never ended: {}",
        server.stdout()
    );
    let mut words = line[LISTENING.len()..].split_whitespace();
    let addr = words.next().expect("an address").to_owned();
    let pid = words
        .nth(1)
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    (addr, pid)
}

/// What the diagnosis of the fixture at `addr` (pid `pid`) given `port` begins with.
fn diagnosis(pid: u32, addr: &str, port: u16, handoff: &str) -> String {
    format!("the server (pid {pid}) listens on {addr}, not on {port} ({handoff} handoff)")
}

/// `status` and `status --json`: the diagnosis, or none.
fn status_diagnosis(project: &TestProject) -> (String, Option<String>) {
    let text = project.run_portguard(&["status"]);
    assert_eq!(text.code(), Some(0), "{}", text.describe());
    let json = project.run_portguard(&["status", "--json"]);
    assert_eq!(json.code(), Some(0), "{}", json.describe());
    let value: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|err| panic!("status --json is not JSON ({err}): {}", json.describe()));
    let entry = &value["instances"][0];
    assert_eq!(entry["state"], "running", "{value}");
    (
        text.stdout,
        entry.get("diagnosis").map(|diagnosis| {
            diagnosis
                .as_str()
                .unwrap_or_else(|| panic!("diagnosis is not a string: {entry}"))
                .to_owned()
        }),
    )
}

fn stop(project: &TestProject, mut server: Running) {
    let stopped = project.run_portguard(&["stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    assert!(
        server.wait_exit(EXIT_TIMEOUT).is_some(),
        "serve-safe did not exit after stop"
    );
}

/// The foreground warns, once, within seconds of the server listening, and keeps it running;
/// `status` shows the diagnosis in text and JSON.
fn foreground_warns(handoff: &str) {
    let (project, port) = project(handoff);
    let server = project.serve(&["--", "--listen-elsewhere"]);
    let (addr, pid) = listening(&server);
    let listened = Instant::now();
    let expected = diagnosis(pid, &addr, port, handoff);
    let stderr = server
        .wait_for_stderr(&expected, DIAGNOSIS_WITHIN)
        .unwrap_or_else(|stderr| {
            panic!(
                "no diagnosis within {DIAGNOSIS_WITHIN:?} of listening on {addr}; stderr:\n{stderr}"
            )
        });
    assert!(
        listened.elapsed() < DIAGNOSIS_WITHIN,
        "took {:?}",
        listened.elapsed()
    );
    let line = stderr
        .lines()
        .find(|line| line.contains(&expected))
        .expect("found above");
    assert!(line.starts_with("warning: "), "{line}");
    assert!(line.contains("fix: "), "{line}");
    assert!(line.contains("`PORT`"), "{line}");
    if handoff == "socket" {
        assert!(line.contains("portguard::listener()"), "{line}");
        assert!(line.contains("handoff = \"env\""), "{line}");
    }
    assert!(!stderr.contains(READY_LINE), "{stderr}");

    // The user may want the server all the same: it keeps running where it listens.
    let own_port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("a port");
    assert_eq!(
        http_get(own_port, "/health").map(|answer| answer.0),
        Ok(200)
    );

    let (text, json) = status_diagnosis(&project);
    assert!(
        text.contains(&format!(
            "{FIXTURE_INSTANCE}: RUNNING, {STATUS_FLAG}: {expected}"
        )),
        "{text}"
    );
    let json = json.unwrap_or_else(|| panic!("no diagnosis in status --json"));
    assert!(json.starts_with(&expected), "{json}");
    assert!(json.contains("fix: "), "{json}");

    // Said once.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        server.stderr().matches(&expected).count(),
        1,
        "{}",
        server.stderr()
    );
    stop(&project, server);
}

#[test]
fn env_handoff_server_listening_elsewhere_is_diagnosed_while_it_runs() {
    foreground_warns("env");
}

#[test]
fn socket_handoff_server_listening_elsewhere_is_diagnosed_while_it_runs() {
    foreground_warns("socket");
}

/// `--detach` fails with the diagnosis long before `ready-timeout-ms`, leaving nothing.
fn detach_fails_early(handoff: &str) {
    let (project, port) = project(handoff);
    let started = Instant::now();
    let run = project.run_serve_safe(&["--detach", "--", "--listen-elsewhere"]);
    let took = started.elapsed();
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(
        took < DETACH_FAILS_WITHIN,
        "took {took:?}: {}",
        run.describe()
    );
    assert_eq!(run.stdout, "", "{}", run.describe());
    let expected = format!(", not on {port} ({handoff} handoff)");
    // cargo's progress may come first (`Blocking waiting for file lock` while other tests
    // build): the diagnosis is the error line.
    let first = run
        .stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        first.starts_with("error: the server (pid "),
        "{}",
        run.describe()
    );
    assert!(first.contains(&expected), "{}", run.describe());
    assert!(first.contains(DIAGNOSIS), "{}", run.describe());
    assert!(first.contains("fix: "), "{}", run.describe());
    // The log says it too.
    let log = std::fs::read_to_string(project.log_file(FIXTURE_INSTANCE)).expect("the log");
    assert!(log.contains(&expected), "{log}");

    let status = project.run_portguard(&["status"]);
    assert_eq!(status.code(), Some(3), "{}", status.describe());
    project
        .wait_until_no_process_left(Duration::from_secs(10))
        .unwrap_or_else(|left| panic!("still running: {left:?}"));
    assert!(wait_until_port_free(port, Duration::from_secs(5)));
}

#[test]
fn env_handoff_detach_fails_early_on_a_server_listening_elsewhere() {
    detach_fails_early("env");
}

#[test]
fn socket_handoff_detach_fails_early_on_a_server_listening_elsewhere() {
    detach_fails_early("socket");
}

/// A server that listens late, on its port, is not diagnosed: not while it waits, not after.
fn slow_start_is_no_alarm(handoff: &str) {
    let (project, _) = project(handoff);
    let server = project.serve(&["--", "--delay-ms", "3000"]);
    // While it waits before listening (the build is warm: cargo is done within the delay).
    assert!(
        wait_until(READY_TIMEOUT, || project
            .read_json(FIXTURE_INSTANCE)
            .is_some_and(|record| record["pid"]
                .as_u64()
                .is_some_and(|pid| pid > 0))),
        "no record"
    );
    let (text, json) = status_diagnosis(&project);
    assert!(!text.contains(STATUS_FLAG), "{text}");
    assert_eq!(json, None);
    ready(&project, &server);
    let stderr = server.stderr();
    assert!(!stderr.contains(DIAGNOSIS), "{stderr}");
    stop(&project, server);
}

#[test]
fn env_handoff_slow_start_is_no_alarm() {
    slow_start_is_no_alarm("env");
}

#[test]
fn socket_handoff_slow_start_is_no_alarm() {
    slow_start_is_no_alarm("socket");
}

/// A server on its port and on an admin port besides is not diagnosed.
fn admin_port_is_no_alarm(handoff: &str) {
    let (project, port) = project(handoff);
    let server = project.serve(&["--", "--admin-listener"]);
    let ready = ready(&project, &server);
    assert_eq!(ready.port, port);
    assert!(server.stdout().contains("fixture: admin listener on "));
    // Past the moment a diagnosis would have come.
    std::thread::sleep(Duration::from_millis(2500));
    let stderr = server.stderr();
    assert!(!stderr.contains(DIAGNOSIS), "{stderr}");
    let (text, json) = status_diagnosis(&project);
    assert!(!text.contains(STATUS_FLAG), "{text}");
    assert_eq!(json, None);
    stop(&project, server);
}

#[test]
fn env_handoff_admin_port_besides_is_no_alarm() {
    admin_port_is_no_alarm("env");
}

#[test]
fn socket_handoff_admin_port_besides_is_no_alarm() {
    admin_port_is_no_alarm("socket");
}

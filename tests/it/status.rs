//! `cargo portguard status`: what a user or a script learns about an instance, running,
//! stopped or left behind by a supervisor that died, from the state folder alone.

use std::time::Duration;

use crate::support::*;
use serde_json::Value;

/// Exit code of `status` when nothing is running (as LSB init scripts say it).
const NOT_RUNNING: i32 = 3;

/// Starts the fixture under `cargo serve-safe` and waits until it answers.
fn start(project: &TestProject, args: &[&str]) -> (Running, Ready) {
    let server = project.serve(args);
    let ready = ready(project, &server);
    (server, ready)
}

/// Whether `text` holds `word` delimited by characters that cannot be part of a number or
/// name, so that pid 12 is not found in port 5123.
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .any(|token| token == word)
}

#[test]
fn status_of_a_running_instance_shows_it_in_text_and_json() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let (server, ready) = start(&project, &[]);
    assert_eq!(ready.port, port);
    let record = project.read_json(FIXTURE_INSTANCE).expect("a .json");
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    let url = format!("http://127.0.0.1:{port}");

    let text = project.run_portguard(&["status"]);
    assert_eq!(text.code(), Some(0), "{}", text.describe());
    let out = &text.stdout;
    assert!(out.contains(FIXTURE_INSTANCE), "instance name: {out}");
    assert!(out.contains("RUNNING"), "state: {out}");
    assert!(has_word(out, &pid.to_string()), "server pid {pid}: {out}");
    assert!(has_word(out, &port.to_string()), "port {port}: {out}");
    assert!(out.contains(&url), "url {url}: {out}");
    assert!(has_word(out, "socket"), "handoff: {out}");
    assert!(
        has_word(out, "unknown"),
        "health without a health-path: {out}"
    );

    let (code, json, finished) = status_json(&project, &[]);
    assert_eq!(code, Some(0), "{}", finished.describe());
    let entries = instances(&json);
    assert_eq!(entries.len(), 1, "one instance: {json}");
    let entry = &entries[0];
    assert_eq!(sorted_keys(entry), sorted(&RUNNING_ENTRY_KEYS), "{entry}");
    assert_eq!(entry["instance"], FIXTURE_INSTANCE);
    assert_eq!(entry["state"], "running");
    assert_eq!(entry["pid"], pid, "{entry}");
    assert_eq!(
        entry["pid"], ready.info["pid"],
        "the server's own pid: {entry}"
    );
    assert_eq!(entry["supervisor_pid"], server.pid(), "{entry}");
    assert_eq!(entry["supervisor_pid"], record["supervisor_pid"]);
    assert_eq!(entry["port"], port);
    assert_eq!(entry["host"], "127.0.0.1");
    assert_eq!(entry["url"], url);
    assert_eq!(entry["handoff"], "socket");
    assert_eq!(entry["started_at"], record["started_at"]);
    let uptime = entry["uptime_secs"]
        .as_u64()
        .unwrap_or_else(|| panic!("uptime_secs is a whole number: {entry}"));
    assert!(uptime < 600, "started moments ago: {entry}");
    assert_eq!(entry["health"], "unknown", "no health-path: {entry}");

    // Asking for the instance by name gives the same entry.
    let (code, named, _) = status_json(&project, &["--instance", FIXTURE_INSTANCE]);
    assert_eq!(code, Some(0));
    assert_eq!(instances(&named)[0]["pid"], pid);
}

#[test]
fn status_of_an_instance_that_never_ran_is_stopped_with_exit_code_3() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");

    let (code, json, finished) = status_json(&project, &[]);
    assert_eq!(code, Some(NOT_RUNNING), "{}", finished.describe());
    assert_eq!(instances(&json).len(), 0, "nothing runs: {json}");

    let (code, json, finished) = status_json(&project, &["--instance", FIXTURE_INSTANCE]);
    assert_eq!(code, Some(NOT_RUNNING), "{}", finished.describe());
    let entries = instances(&json);
    assert_eq!(entries.len(), 1, "{json}");
    assert_eq!(entries[0]["instance"], FIXTURE_INSTANCE);
    assert_eq!(entries[0]["state"], "stopped");
    assert_eq!(
        sorted_keys(&entries[0]),
        sorted(&["instance", "state"]),
        "{json}"
    );

    let text = project.run_portguard(&["status"]);
    assert_eq!(text.code(), Some(NOT_RUNNING), "{}", text.describe());
    assert!(!text.stdout.contains("RUNNING"), "{}", text.describe());
}

#[test]
fn status_after_a_clean_stop_is_stopped_and_lists_nothing() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let (mut server, _) = start(&project, &[]);
    server.signal(Signal::TERM);
    assert_eq!(
        server.wait_exit(EXIT_TIMEOUT).map(|status| status.code()),
        Some(Some(0)),
        "{}",
        server.stderr()
    );
    // The lock file stays behind; it alone says nothing runs.
    assert!(project.lock_file(FIXTURE_INSTANCE).exists());

    let (code, json, finished) = status_json(&project, &[]);
    assert_eq!(code, Some(NOT_RUNNING), "{}", finished.describe());
    assert_eq!(instances(&json).len(), 0, "{json}");

    let (code, json, _) = status_json(&project, &["--instance", FIXTURE_INSTANCE]);
    assert_eq!(code, Some(NOT_RUNNING));
    assert_eq!(instances(&json)[0]["state"], "stopped", "{json}");
    assert_eq!(
        sorted_keys(&instances(&json)[0]),
        sorted(&["instance", "state"])
    );
}

/// Starts an instance and SIGKILLs its supervisor, leaving its files behind.
fn start_and_kill_supervisor(project: &TestProject) -> (u32, u32) {
    let (mut server, ready) = start(project, &[]);
    let server_pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    server.signal(Signal::KILL);
    server
        .wait_exit(EXIT_TIMEOUT)
        .expect("the supervisor survived SIGKILL");
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(server_pid)),
        "the server outlived its supervisor"
    );
    assert!(wait_until_port_free(ready.port, Duration::from_secs(10)));
    assert!(project.json_file(FIXTURE_INSTANCE).exists());
    assert!(project.pid_file(FIXTURE_INSTANCE).exists());
    (server.pid(), server_pid)
}

#[test]
fn status_reports_a_dead_supervisor_as_stale_and_leaves_the_cleanup_to_stop() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let (supervisor_pid, _) = start_and_kill_supervisor(&project);

    let (code, json, finished) = status_json(&project, &[]);
    assert_eq!(code, Some(NOT_RUNNING), "{}", finished.describe());
    let entries = instances(&json);
    assert_eq!(entries.len(), 1, "the stale instance is listed: {json}");
    assert_eq!(entries[0]["instance"], FIXTURE_INSTANCE);
    assert_eq!(entries[0]["state"], "stale", "{json}");
    assert_eq!(
        sorted_keys(&entries[0]),
        sorted(&["instance", "state"]),
        "{json}"
    );
    // status only reads: the files stay, and a second look says the same.
    assert!(
        project.json_file(FIXTURE_INSTANCE).exists(),
        ".json removed"
    );
    assert!(project.pid_file(FIXTURE_INSTANCE).exists(), ".pid removed");
    // Again and again, in every form: status never cleans up, so the answer does not change.
    for round in 0..5 {
        let (code, again, _) = status_json(&project, &[]);
        assert_eq!(code, Some(NOT_RUNNING), "round {round}: {again}");
        assert_eq!(
            instances(&again)[0]["state"],
            "stale",
            "round {round}: {again}"
        );
        let (_, named, _) = status_json(&project, &["--instance", FIXTURE_INSTANCE]);
        assert_eq!(
            instances(&named)[0]["state"],
            "stale",
            "round {round}: {named}"
        );
        let text = project.run_portguard(&["status"]);
        assert!(
            text.stdout.contains("stale"),
            "round {round}: {}",
            text.describe()
        );
        assert!(
            project.json_file(FIXTURE_INSTANCE).exists(),
            "round {round}: .json removed"
        );
        assert!(
            project.pid_file(FIXTURE_INSTANCE).exists(),
            "round {round}: .pid removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The cleanup belongs to `stop` (and the next start): it says which supervisor died.
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(
        stop.stderr.contains(&supervisor_pid.to_string()),
        "says which supervisor died:\n{}",
        stop.describe()
    );
    assert!(!project.json_file(FIXTURE_INSTANCE).exists(), ".json left");
    assert!(!project.pid_file(FIXTURE_INSTANCE).exists(), ".pid left");
    let (code, json, finished) = status_json(&project, &[]);
    assert_eq!(code, Some(NOT_RUNNING), "{}", finished.describe());
    assert_eq!(instances(&json).len(), 0, "{json}");
}

#[test]
fn status_text_says_stale_until_the_next_start_cleans_up() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let (supervisor_pid, _) = start_and_kill_supervisor(&project);

    let first = project.run_portguard(&["status"]);
    assert_eq!(first.code(), Some(NOT_RUNNING), "{}", first.describe());
    assert!(
        first.stdout.contains(FIXTURE_INSTANCE),
        "{}",
        first.describe()
    );
    assert!(first.stdout.contains("stale"), "{}", first.describe());
    assert!(!first.stdout.contains("RUNNING"), "{}", first.describe());
    assert!(
        first.stdout.contains(&format!("pid {supervisor_pid}")),
        "names the supervisor that died: {}",
        first.describe()
    );
    assert!(project.json_file(FIXTURE_INSTANCE).exists());

    // The next start cleans up what the crash left, and its stop leaves nothing.
    let server = project.serve(&[]);
    let _ready = ready(&project, &server);
    assert!(
        server.stderr().contains("was not shut down cleanly"),
        "{}",
        server.stderr()
    );
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    drop(server);

    let second = project.run_portguard(&["status"]);
    assert_eq!(second.code(), Some(NOT_RUNNING), "{}", second.describe());
    assert!(!second.stdout.contains("stale"), "{}", second.describe());
    assert!(!second.stdout.contains("RUNNING"), "{}", second.describe());
    let (_, json, _) = status_json(&project, &["--instance", FIXTURE_INSTANCE]);
    assert_eq!(instances(&json)[0]["state"], "stopped", "{json}");
}

/// The `health` of the only instance in `status --json`, which must say it runs.
fn health(project: &TestProject) -> Value {
    let (code, json, finished) = status_json(project, &[]);
    assert_eq!(
        code,
        Some(0),
        "running whatever its health:\n{}",
        finished.describe()
    );
    assert_eq!(instances(&json)[0]["state"], "running", "{json}");
    instances(&json)[0]["health"].clone()
}

#[test]
fn status_follows_the_health_path_from_unhealthy_to_healthy() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port(
        "handoff = \"socket\"\nhealth-path = \"/health\"\ncheck-timeout-ms = 5000",
    );
    let health_file = project.dir.path().join("health-status");
    let health_arg = health_file.to_str().expect("UTF-8 temp path");
    std::fs::write(&health_file, "503").expect("write the health file");
    let server = project.serve(&["--", "--health-file", health_arg]);
    server
        .wait_for_stdout("fixture: listening", READY_TIMEOUT)
        .unwrap_or_else(|stdout| panic!("the server never listened: {stdout}"));
    let port = project.read_json(FIXTURE_INSTANCE).expect("a .json")["port"]
        .as_u64()
        .expect("a port") as u16;
    assert_eq!(http_get(port, "/health").map(|r| r.0), Ok(503));
    // It answers, but not 2xx: not ready, so not reported healthy. (The README calls this
    // "still starting", `unknown`; `unhealthy` would be as true.)
    let starting = health(&project);
    assert!(
        starting == "unknown" || starting == "unhealthy",
        "a server answering 503 is reported {starting}"
    );
    assert!(
        !server.stderr().contains(READY_LINE),
        "ready on a 503:\n{}",
        server.stderr()
    );

    std::fs::write(&health_file, "200").expect("write the health file");
    let ready = ready(&project, &server);
    assert_eq!(health(&project), "healthy");

    std::fs::write(&health_file, "503").expect("write the health file");
    assert_eq!(http_get(ready.port, "/health").map(|r| r.0), Ok(503));
    assert_eq!(health(&project), "unhealthy");
    let text = project.run_portguard(&["status"]);
    assert_eq!(text.code(), Some(0), "{}", text.describe());
    assert!(has_word(&text.stdout, "unhealthy"), "{}", text.describe());

    std::fs::write(&health_file, "200").expect("write the health file");
    assert_eq!(health(&project), "healthy");
    let text = project.run_portguard(&["status"]);
    assert_eq!(text.code(), Some(0), "{}", text.describe());
    assert!(has_word(&text.stdout, "healthy"), "{}", text.describe());
    assert!(!has_word(&text.stdout, "unhealthy"), "{}", text.describe());
}

#[test]
fn status_runs_no_cargo() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (_server, _) = start(&project, &[]);
    // Neither through CARGO nor on PATH: any `cargo metadata` would fail.
    let empty_bin = project.dir.path().join("empty-bin");
    std::fs::create_dir(&empty_bin).expect("create an empty folder");
    let mut command = project.portguard(&["status", "--json"]);
    command
        .env("CARGO", "/nonexistent/cargo")
        .env("PATH", &empty_bin);
    let finished = run_within(command, COMMAND_TIMEOUT);
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
    let json: Value = serde_json::from_str(&finished.stdout).expect("JSON");
    assert_eq!(instances(&json)[0]["state"], "running", "{json}");
    assert_eq!(instances(&json)[0]["port"], port, "{json}");
    assert!(
        !finished.stderr.contains("cargo"),
        "nothing about cargo:\n{}",
        finished.describe()
    );

    // Also from a folder below the package root, as a user in `src/` would ask.
    let mut command = project.portguard(&["status", "--json"]);
    command
        .current_dir(project.root.join("src"))
        .env("CARGO", "/nonexistent/cargo")
        .env("PATH", &empty_bin);
    let finished = run_within(command, COMMAND_TIMEOUT);
    assert_eq!(finished.code(), Some(0), "{}", finished.describe());
}

#[test]
fn an_environment_picks_its_port_range_and_shows_in_status() {
    let project = TestProject::fixture();
    let (_held, busy) = hold_port();
    let free = free_port();
    // The `ci` table moves the server into a range; its first port is busy, so the second.
    let range_start = busy.min(free);
    project.set_metadata(&format!(
        "preferred-port = {busy}\nfallback-ports = []\nmax-attempts = 1\ndynamic-port = false\n\n\
         [package.metadata.portguard.env.ci]\npreferred-port = {busy}\nport-range = \"{range_start}-{}\"\nmax-attempts = 70000",
        range_start.max(free)
    ));
    let (_server, ready) = start(&project, &["--env", "ci"]);
    assert_ne!(ready.port, busy, "{}", ready.line);
    let (code, json, finished) = status_json(&project, &[]);
    assert_eq!(code, Some(0), "{}", finished.describe());
    assert_eq!(json["instances"][0]["environment"], "ci", "{json}");
    let text = project.run_portguard(&["status"]);
    assert!(
        text.stdout.contains("environment `ci`"),
        "{}",
        text.describe()
    );
}

#[test]
fn status_answers_at_once_while_a_start_cleans_up_slowly() {
    let project = TestProject::fixture();
    // Cleanup of the orphan below waits out the whole grace period.
    project.set_metadata_on_free_port("shutdown-timeout-ms = 3000");
    let (mut crashed, _) = start(&project, &["--", "--fork-child-ignoring-sigterm"]);
    let server_pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    crashed.signal(Signal::KILL);
    crashed
        .wait_exit(EXIT_TIMEOUT)
        .expect("the supervisor survived SIGKILL");
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(server_pid)),
        "the server outlived its supervisor"
    );

    // The next start finds the server's child (which ignores SIGTERM) in its group.
    let next = project.serve(&[]);
    next.wait_for_stderr("still running in its process group", READY_TIMEOUT)
        .unwrap_or_else(|stderr| panic!("the start found nothing to clean up:\n{stderr}"));
    for round in 0..3 {
        let asked = std::time::Instant::now();
        let (code, json, finished) = status_json(&project, &[]);
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(800),
            "round {round}: status waited for the cleanup ({took:?}):\n{}",
            finished.describe()
        );
        assert!(
            matches!(code, Some(0 | 3)),
            "round {round}: {}",
            finished.describe()
        );
        assert_eq!(instances(&json).len(), 1, "round {round}: {json}");
        let entry = &instances(&json)[0];
        assert_eq!(entry["instance"], FIXTURE_INSTANCE, "{json}");
        // The crashed run's record is still there, but its supervisor is not what runs.
        assert_ne!(
            entry["supervisor_pid"],
            crashed.pid(),
            "round {round}: the dead supervisor is reported running: {json}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !next.stderr().contains(READY_LINE),
        "the cleanup was over before status was asked:\n{}",
        next.stderr()
    );
    let _ready = ready(&project, &next);
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
}

#[test]
fn status_in_a_loop_never_gets_in_the_way_of_a_start() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let askers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut answers = 0;
                    while !done.load(Ordering::SeqCst) {
                        let output = project
                            .portguard(&["status", "--json"])
                            .output()
                            .expect("run status");
                        assert!(
                            matches!(output.status.code(), Some(0 | 3)),
                            "status failed: {}",
                            String::from_utf8_lossy(&output.stderr)
                        );
                        answers += 1;
                    }
                    answers
                })
            })
            .collect();
        let mut results = Vec::new();
        for _ in 0..5 {
            let started = project.run_serve_safe(&["--detach"]);
            let stop = project.run_portguard(&["stop"]);
            results.push((started, stop));
        }
        done.store(true, Ordering::SeqCst);
        let answers: usize = askers
            .into_iter()
            .map(|asker| asker.join().expect("a status loop panicked"))
            .sum();
        assert!(answers >= 10, "status was asked only {answers} times");
        for (round, (started, stop)) in results.iter().enumerate() {
            assert_eq!(
                started.code(),
                Some(0),
                "start {round} failed:\n{}",
                started.describe()
            );
            assert!(
                !started.stderr.contains("already running"),
                "{}",
                started.describe()
            );
            assert_eq!(stop.code(), Some(0), "stop {round}: {}", stop.describe());
        }
    });
}

//! Build, then swap: `restart` (and SIGUSR2) and `serve-safe --watch` build the new code while
//! the old server serves, start the new build beside it on the handed socket, and stop the old
//! one only once the new one accepts. Real edits to a fixture's `main.rs` change what `GET /`
//! answers, so every test sees which build serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::support::*;

/// Bound on a build and swap of the fixture (a slow build script included).
const RELOAD_TIMEOUT: Duration = Duration::from_mins(2);

/// A build script that sleeps as many milliseconds as `slow-build-ms` says, so that a test can
/// make a build take longer than any wait a client could miss. It runs again whenever `src/`
/// changes.
const BUILD_SCRIPT: &str = r#"fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=slow-build-ms");
    if let Ok(ms) = std::fs::read_to_string("slow-build-ms") {
        let ms: u64 = ms.trim().parse().unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
"#;

/// A copy of the fixture that builds into a target dir of its own (its sources change), whose
/// `GET /` answers `body`, in socket handoff, with `metadata` added.
fn project_answering(body: &str, metadata: &str) -> TestProject {
    let project = TestProject::fixture().own_target_dir();
    set_body(&project, body);
    project.write_file("build.rs", BUILD_SCRIPT);
    project.set_metadata_on_free_port(&format!("handoff = \"socket\"\n{metadata}"));
    project
}

fn set_body(project: &TestProject, body: &str) {
    project.write_file(
        "src/main.rs",
        format!("fn main() {{\n    server_core::main_with({body:?})\n}}\n"),
    );
}

fn set_build_delay(project: &TestProject, delay: Duration) {
    project.write_file("slow-build-ms", delay.as_millis().to_string());
}

/// Starts the copy under `serve-safe ARGS` and waits until it answers; its port.
fn serve(project: &TestProject, args: &[&str]) -> (Running, u16) {
    let server = project.serve(args);
    let port = ready_port(&server, RELOAD_TIMEOUT);
    (server, port)
}

fn body(port: u16) -> String {
    match http_get_within(port, "/", Duration::from_secs(10)) {
        Ok((200, body)) => body.trim().to_owned(),
        Ok((status, body)) => panic!("GET / answered {status}: {body}"),
        Err(error) => panic!("GET / failed: {}", error.message),
    }
}

/// What a client saw while a reload went on.
#[derive(Debug, Default)]
struct Traffic {
    /// The bodies answered, in order, without consecutive repeats.
    bodies: Vec<String>,
    answered: usize,
    refused: Vec<String>,
    failed: Vec<String>,
    /// The longest time between two answered requests.
    longest_wait: Duration,
}

/// `GET /` on `port` back to back (a fresh connection each) until `done` is set.
fn send_requests(port: u16, done: Arc<AtomicBool>) -> JoinHandle<Traffic> {
    thread::spawn(move || {
        let mut traffic = Traffic::default();
        let mut last_answer = Instant::now();
        let started = Instant::now();
        while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_mins(3) {
            match http_get_within(port, "/", Duration::from_secs(30)) {
                Ok((200, body)) => {
                    traffic.answered += 1;
                    traffic.longest_wait = traffic.longest_wait.max(last_answer.elapsed());
                    last_answer = Instant::now();
                    let body = body.trim().to_owned();
                    if traffic.bodies.last() != Some(&body) {
                        traffic.bodies.push(body);
                    }
                }
                Ok((status, body)) => traffic.failed.push(format!("{status}: {body}")),
                Err(error) if error.kind == std::io::ErrorKind::ConnectionRefused => {
                    traffic.refused.push(error.message);
                }
                Err(error) => traffic.failed.push(error.message),
            }
            thread::sleep(Duration::from_millis(2));
        }
        traffic
    })
}

/// Runs `during` with a client sending requests, and what the client saw.
fn under_traffic(port: u16, during: impl FnOnce()) -> Traffic {
    let done = Arc::new(AtomicBool::new(false));
    let client = send_requests(port, Arc::clone(&done));
    thread::sleep(Duration::from_millis(200));
    during();
    thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::SeqCst);
    client.join().expect("the client thread panicked")
}

fn assert_nothing_refused_or_failed(traffic: &Traffic) {
    assert!(traffic.refused.is_empty(), "refused: {traffic:#?}");
    assert!(traffic.failed.is_empty(), "failed: {traffic:#?}");
    assert!(traffic.answered >= 20, "too little traffic: {traffic:#?}");
}

/// A reload from `v1` to `v2` with a build of `build`: nothing refused or failed, and no client
/// waited anywhere near as long as the compiler.
fn assert_served_through(traffic: &Traffic, build: Duration) {
    assert_nothing_refused_or_failed(traffic);
    assert_swapped(traffic, "v1", "v2");
    assert!(
        traffic.longest_wait < build * 2 / 3,
        "a client waited for the compiler ({:?} with a {build:?} build): {traffic:#?}",
        traffic.longest_wait
    );
}

/// The old build answered first and the new one last; during the swap both accept on the
/// socket, so their answers may alternate, but no other build answered.
fn assert_swapped(traffic: &Traffic, old: &str, new: &str) {
    assert_eq!(
        traffic.bodies.first().map(String::as_str),
        Some(old),
        "{traffic:#?}"
    );
    assert_eq!(
        traffic.bodies.last().map(String::as_str),
        Some(new),
        "{traffic:#?}"
    );
    assert!(
        traffic.bodies.iter().all(|body| body == old || body == new),
        "{traffic:#?}"
    );
}

/// `restart`, which must exit 1 saying `needle`; what it printed.
fn restart_fails_with(project: &TestProject, needle: &str) -> Finished {
    let restart = project.run_portguard(&["restart"]);
    assert_eq!(restart.code(), Some(1), "{}", restart.describe());
    assert!(restart.stderr.contains(needle), "{}", restart.describe());
    restart
}

/// The status entry once the supervisor has recorded `swaps` swaps: the new build answers as
/// soon as it accepts, and the record says so once the old server has stopped.
fn status_once_swapped(project: &TestProject, swaps: usize) -> serde_json::Value {
    let swaps = u64::try_from(swaps).expect("a count");
    let mut status = status_entry(project);
    wait_until(Duration::from_secs(30), || {
        status = status_entry(project);
        status["generation"].as_u64() >= Some(swaps)
    });
    status
}

/// The one entry of `status --json`, which must exit 0.
fn status_entry(project: &TestProject) -> serde_json::Value {
    let (code, json, finished) = status_json(project, &[]);
    assert_eq!(code, Some(0), "{}", finished.describe());
    instances(&json)[0].clone()
}

fn stop(project: &TestProject, server: &mut Running) {
    let stopped = project.run_portguard(&["stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    let status = server
        .wait_exit(EXIT_TIMEOUT)
        .expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
}

#[test]
fn restart_serves_the_old_build_until_the_new_one_accepts_and_refuses_nothing() {
    let project = project_answering("v1", "");
    let (mut server, port) = serve(&project, &["--", "--graceful"]);
    let old_pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    // A build that takes longer than any wait the client may see.
    let build = Duration::from_millis(1500);
    set_build_delay(&project, build);
    set_body(&project, "v2");

    let traffic = under_traffic(port, || {
        let restart = run_within(project.portguard(&["restart"]), RELOAD_TIMEOUT);
        assert_eq!(restart.code(), Some(0), "{}", restart.describe());
        assert!(
            restart.stderr.contains("Restarted"),
            "{}",
            restart.describe()
        );
    });
    eprintln!("traffic during the restart: {traffic:?}");

    assert_served_through(&traffic, build);
    let stderr = server.stderr();
    let restarted = stderr
        .lines()
        .find(|line| line.trim_start().starts_with("Restarted in "))
        .unwrap_or_else(|| panic!("one line for the restart:\n{stderr}"));
    assert!(restarted.contains("(build "), "{restarted}");
    assert!(
        stderr.contains(&format!("the server (pid {old_pid}) keeps serving")),
        "{stderr}"
    );
    assert!(
        server.stdout().contains("fixture: stopped gracefully"),
        "the old server drained and exited on SIGTERM:\n{}",
        server.stdout()
    );
    let status = status_entry(&project);
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["build"]["state"], "serving", "{status}");
    assert_eq!(status["build"]["cause"], "restart", "{status}");
    assert!(status["reloaded_at"].is_string(), "{status}");
    assert_ne!(status["pid"], old_pid, "{status}");
    stop(&project, &mut server);
}

#[test]
fn a_restart_that_does_not_build_keeps_the_old_server_serving() {
    let project = project_answering("v1", "");
    let (mut server, port) = serve(&project, &[]);
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    project.write_file(
        "src/main.rs",
        "fn main() {\n    server_core::main_with(undefined_name)\n}\n",
    );

    let restart = restart_fails_with(
        &project,
        "the restart of `fixture-server` failed: error[E0425]",
    );
    assert!(
        restart.stderr.contains("src/main.rs:2"),
        "and where it is:\n{}",
        restart.describe()
    );
    assert!(
        restart.stderr.contains("the old server keeps serving"),
        "{}",
        restart.describe()
    );
    assert_eq!(body(port), "v1");
    assert_eq!(project.read_pid(FIXTURE_INSTANCE), Some(pid));
    // cargo's own diagnostics went to the supervisor's output, where the developer looks.
    assert!(
        server
            .stderr()
            .contains("cannot find value `undefined_name`"),
        "{}",
        server.stderr()
    );

    let status = project.run_portguard(&["status"]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    assert!(
        status
            .stdout
            .contains("last build: FAILED (for a restart, ")
            && status.stdout.contains("error[E0425]"),
        "status shows the failed build and its first error:\n{}",
        status.describe()
    );
    let json = status_entry(&project);
    assert_eq!(json["build"]["state"], "failed", "{json}");
    assert!(
        json["build"]["error"]
            .as_str()
            .is_some_and(|error| error.starts_with("error[E0425]")),
        "{json}"
    );
    assert!(json.get("generation").is_none(), "no swap yet: {json}");

    // The next good build swaps in.
    set_body(&project, "v2");
    let restart = project.run_portguard(&["restart"]);
    assert_eq!(restart.code(), Some(0), "{}", restart.describe());
    assert_eq!(body(port), "v2");
    let json = status_entry(&project);
    assert_eq!(json["generation"], 1, "{json}");
    assert_eq!(json["build"]["state"], "serving", "{json}");
    assert!(json["build"].get("error").is_none(), "{json}");
    stop(&project, &mut server);
}

#[test]
fn a_new_server_that_exits_is_stopped_and_the_old_one_keeps_serving() {
    let project = project_answering("v1", "");
    let (mut server, port) = serve(&project, &[]);
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    project.write_file("src/main.rs", "fn main() {\n    std::process::exit(3)\n}\n");

    restart_fails_with(
        &project,
        "the new server exited with exit status 3 before it was ready",
    );
    assert_eq!(body(port), "v1");
    assert_eq!(project.read_pid(FIXTURE_INSTANCE), Some(pid));
    assert!(
        server
            .stderr()
            .contains("exited with exit status 3 before it was ready; the old build keeps serving"),
        "{}",
        server.stderr()
    );
    let json = status_entry(&project);
    assert_eq!(json["build"]["state"], "server-failed", "{json}");
    assert_eq!(json["pid"], pid, "{json}");
    stop(&project, &mut server);
}

#[test]
fn a_new_server_that_is_not_ready_in_time_is_stopped() {
    let project = project_answering("v1", "ready-timeout-ms = 2000");
    let (mut server, port) = serve(&project, &["--", "--graceful"]);
    // The new build holds the socket it is given and never accepts on it.
    project.write_file(
        "src/main.rs",
        "fn main() {\n    std::thread::sleep(std::time::Duration::from_secs(3600))\n}\n",
    );
    restart_fails_with(&project, "was not ready within 2s (`ready-timeout-ms`)");
    assert_eq!(body(port), "v1");
    assert_eq!(status_entry(&project)["build"]["state"], "server-failed");
    stop(&project, &mut server);
    if let Err(left) = project.wait_until_no_process_left(Duration::from_secs(10)) {
        panic!("processes left: {left:?}");
    }
}

#[test]
fn the_new_server_gets_what_cargo_run_gives_it() {
    let project = project_answering("v1", "");
    // `[env]` of cargo's configuration reaches what `cargo run` starts; a swap must keep it.
    project.write_file(
        ".cargo/config.toml",
        "[env]\nFIXTURE_FROM_CARGO_CONFIG = \"yes\"\n",
    );
    let (mut server, port) = serve(&project, &["--", "--graceful", "--delay-ms", "0"]);
    let before_env = env_of(port);
    let before_info = info(port);
    set_body(&project, "v2");
    let restart = project.run_portguard(&["restart"]);
    assert_eq!(restart.code(), Some(0), "{}", restart.describe());
    assert_eq!(body(port), "v2");
    let after_env = env_of(port);
    let after_info = info(port);

    assert_eq!(before_env["FIXTURE_FROM_CARGO_CONFIG"], "yes");
    assert_eq!(
        after_env["LISTEN_PID"],
        after_info["pid"].to_string(),
        "LISTEN_PID is the new server's own pid"
    );
    let without_pid = |env: &serde_json::Value| {
        let mut env = env.as_object().expect("an object").clone();
        env.remove("LISTEN_PID");
        env
    };
    assert_eq!(
        without_pid(&after_env),
        without_pid(&before_env),
        "the new build's server sees the environment `cargo run` gave the first"
    );
    for key in ["args", "cwd", "port", "socket_from_fd3", "listen_fds"] {
        assert_eq!(after_info[key], before_info[key], "{key}");
    }
    stop(&project, &mut server);
}

fn env_of(port: u16) -> serde_json::Value {
    match http_get_within(port, "/env", Duration::from_secs(10)) {
        Ok((200, body)) => serde_json::from_str(&body).expect("GET /env is JSON"),
        other => panic!("GET /env: {:?}", other.map_err(|error| error.message)),
    }
}

#[test]
fn a_stop_during_the_build_stops_the_build_and_starts_nothing() {
    let project = project_answering("v1", "");
    let (mut server, port) = serve(&project, &[]);
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    set_build_delay(&project, Duration::from_mins(1));
    set_body(&project, "v2");

    server.signal(Signal::USR2);
    server
        .wait_for_stderr("Building for a restart", EXIT_TIMEOUT)
        .unwrap_or_else(|stderr| panic!("no build started:\n{stderr}"));
    // The build script sleeps now; Ctrl-C reaches the supervisor.
    thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    server.signal(Signal::INT);
    let status = server
        .wait_exit(EXIT_TIMEOUT)
        .expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the stop waited for the build: {:?}",
        asked.elapsed()
    );
    let stderr = server.stderr();
    assert!(stderr.contains("the build under way"), "{stderr}");
    assert!(!stderr.contains("Restarted"), "{stderr}");
    assert_eq!(
        server.stdout().matches("fixture: listening").count(),
        1,
        "no new server started:\n{}",
        server.stdout()
    );
    assert!(!process_alive(pid));
    if let Err(left) = project.wait_until_no_process_left(Duration::from_secs(10)) {
        panic!("the build left processes: {left:?}");
    }
    assert!(wait_until_port_free(port, Duration::from_secs(5)));
}

#[test]
fn replicas_are_built_once_and_replaced_one_at_a_time() {
    let project = project_answering("v1", "");
    let (mut server, port) = serve(
        &project,
        &["--verbose", "--replicas", "2", "--", "--graceful"],
    );
    let before: Vec<u64> = project.read_json(FIXTURE_INSTANCE).expect("a .json")["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert_eq!(before.len(), 2);
    set_body(&project, "v2");

    let traffic = under_traffic(port, || {
        let restart = run_within(project.portguard(&["restart"]), RELOAD_TIMEOUT);
        assert_eq!(restart.code(), Some(0), "{}", restart.describe());
    });
    assert_nothing_refused_or_failed(&traffic);
    assert_eq!(traffic.bodies.last().map(String::as_str), Some("v2"));

    let whole = server.stderr();
    let stderr = &whole[whole.find("Building for a restart").expect("a build")..];
    assert_eq!(
        stderr.matches("Compiling fixture-server").count(),
        1,
        "one build for both replicas:\n{stderr}"
    );
    let at = |needle: &str| {
        stderr
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{stderr}"))
    };
    let order = [
        at("Started the new replica 0"),
        at(&format!("Stopped the old replica 0 (pid {})", before[0])),
        at("Started the new replica 1"),
        at(&format!("Stopped the old replica 1 (pid {})", before[1])),
    ];
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "one replica at a time, each old one stopped before the next is replaced:\n{stderr}"
    );
    let after = project.read_json(FIXTURE_INSTANCE).expect("a .json")["replicas"].clone();
    for pid in &before {
        assert!(
            !after
                .as_array()
                .is_some_and(|pids| pids.contains(&serde_json::json!(pid))),
            "{after}"
        );
    }
    stop(&project, &mut server);
}

/// Waits until `GET /` answers `expected`; panics with the supervisor's output otherwise.
fn wait_for_body(port: u16, expected: &str, server: &Running) {
    wait_for_body_or(port, expected, || server.stderr());
}

/// Waits until `GET /` answers `expected`; panics with what `output` says otherwise.
fn wait_for_body_or(port: u16, expected: &str, output: impl FnOnce() -> String) {
    assert!(
        wait_until(RELOAD_TIMEOUT, || http_get_within(
            port,
            "/",
            Duration::from_secs(5)
        )
        .is_ok_and(|(_, body)| body.trim() == expected)),
        "`{expected}` was never served:\n{}",
        output()
    );
}

#[test]
fn watch_swaps_in_the_saved_code_and_refuses_nothing() {
    let project = project_answering("v1", "");
    let build = Duration::from_millis(1500);
    set_build_delay(&project, build);
    let (mut server, port) = serve(&project, &["--watch", "--", "--graceful"]);
    let reloads_before = 0;

    let traffic = under_traffic(port, || {
        set_body(&project, "v2");
        wait_for_body(port, "v2", &server);
    });
    eprintln!("traffic during the reload: {traffic:?}");
    assert_served_through(&traffic, build);
    let stderr = server.stderr();
    let reloaded: Vec<&str> = stderr
        .lines()
        .filter(|line| line.trim_start().starts_with("Reloaded in "))
        .collect();
    assert_eq!(reloaded.len(), reloads_before + 1, "{stderr}");
    let last = reloaded.last().expect("a reload line");
    assert!(
        last.contains("(build ") && last.ends_with("after src/main.rs changed"),
        "{last}"
    );
    let status = status_once_swapped(&project, reloads_before + 1);
    assert_eq!(status["generation"], reloads_before + 1, "{status}");
    assert_eq!(status["build"]["cause"], "src/main.rs changed", "{status}");
    stop(&project, &mut server);
}

#[test]
fn a_compile_error_keeps_the_old_server_answering_until_the_next_good_save() {
    let project = project_answering("v1", "");
    let (mut server, port) = serve(&project, &["--watch"]);
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    project.write_file(
        "src/main.rs",
        "fn main() {\n    server_core::main_with(undefined_name)\n}\n",
    );
    server
        .wait_for_stderr("the last good build keeps serving", RELOAD_TIMEOUT)
        .unwrap_or_else(|stderr| panic!("the failed build was not reported:\n{stderr}"));
    assert!(
        server
            .stderr()
            .contains("cannot find value `undefined_name`"),
        "cargo's diagnostics are shown:\n{}",
        server.stderr()
    );
    assert_eq!(body(port), "v1");
    assert_eq!(project.read_pid(FIXTURE_INSTANCE), Some(pid));
    let status = status_entry(&project);
    assert_eq!(status["build"]["state"], "failed", "{status}");
    assert!(
        status["build"]["error"]
            .as_str()
            .is_some_and(|error| error.contains("undefined_name") && error.contains("src/main.rs")),
        "{status}"
    );

    set_body(&project, "v2");
    wait_for_body(port, "v2", &server);
    let status = status_once_swapped(&project, 1);
    assert_eq!(status["build"]["state"], "serving", "{status}");
    assert_eq!(status["generation"], 1, "{status}");
    stop(&project, &mut server);
}

#[test]
fn two_saves_during_one_build_end_on_the_newest_code() {
    let project = project_answering("v1", "");
    set_build_delay(&project, Duration::from_millis(2500));
    // A server that drains on SIGTERM: the requests the old one accepted are answered.
    let (mut server, port) = serve(&project, &["--watch", "--", "--graceful"]);
    let traffic = under_traffic(port, || {
        set_body(&project, "v2");
        server
            .wait_for_stderr("Building after src/main.rs changed", RELOAD_TIMEOUT)
            .unwrap_or_else(|stderr| panic!("no build:\n{stderr}"));
        thread::sleep(Duration::from_millis(300));
        set_body(&project, "v3");
        wait_for_body(port, "v3", &server);
    });
    assert_nothing_refused_or_failed(&traffic);
    assert_swapped(&traffic, "v1", "v3");
    assert!(
        !traffic.bodies.iter().any(|body| body == "v2"),
        "the build of the first save was cancelled for the second: {traffic:#?}"
    );
    let stderr = server.stderr();
    assert!(
        stderr.contains("Cancelled the build under way: src/main.rs changed; building again"),
        "{stderr}"
    );
    assert_eq!(status_once_swapped(&project, 1)["generation"], 1);
    stop(&project, &mut server);
}

#[test]
fn changes_under_target_or_ignored_paths_start_no_build() {
    let project = project_answering("v1", "watch-ignore = [\"scratch/\"]");
    project.write_file(".gitignore", "notes/\n*.log\n");
    let (mut server, port) = serve(&project, &["--watch"]);
    // Let the first start's own writes settle before looking for builds.
    thread::sleep(Duration::from_millis(500));
    let before = server.stderr();
    project.write_file("target/debug/touched.rs", "// a build's output\n");
    project.write_file("notes/idea.rs", "// ignored by .gitignore\n");
    project.write_file("server.log", "ignored by .gitignore\n");
    project.write_file("scratch/try.rs", "// ignored by watch-ignore\n");
    std::fs::write(project.state_dir().join("note"), "portguard's own folder\n")
        .expect("write in .portguard");
    thread::sleep(Duration::from_millis(1500));
    let after = server.stderr();
    assert!(
        !after[before.len()..].contains("Building"),
        "an ignored change started a build:\n{after}"
    );
    // The watch still works: a source change reloads.
    set_body(&project, "v2");
    wait_for_body(port, "v2", &server);
    assert!(
        server.stderr().contains("after src/main.rs changed"),
        "{}",
        server.stderr()
    );
    stop(&project, &mut server);
}

#[test]
fn a_change_in_a_local_path_dependency_reloads() {
    let project = TestProject::fixture().own_target_dir();
    // A copy of the server's library in a folder of its own, as a path dependency outside the
    // package (each is a workspace of its own, so it cannot sit inside it).
    let elsewhere = tempfile::Builder::new()
        .prefix("portguard-test-core-")
        .tempdir()
        .expect("create temp dir");
    let core = elsewhere.path().join("core");
    let original = fixtures_dir().join("server-core");
    copy_template(&original, &core);
    let manifest = project.read_file("Cargo.toml");
    project.write_file(
        "Cargo.toml",
        manifest.replace(&original.display().to_string(), &core.display().to_string()),
    );
    project.set_metadata_on_free_port("handoff = \"socket\"");
    let (mut server, port) = serve(&project, &["--watch"]);
    assert_eq!(body(port), "fixture");

    let lib = core.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).expect("read the library");
    assert!(source.contains(".unwrap_or(\"fixture\")"));
    std::fs::write(
        &lib,
        source.replace(".unwrap_or(\"fixture\")", ".unwrap_or(\"core v2\")"),
    )
    .expect("edit the library");
    wait_for_body(port, "core v2", &server);
    assert!(
        server.stderr().contains("/core/src/lib.rs changed"),
        "{}",
        server.stderr()
    );
    stop(&project, &mut server);
}

#[test]
fn detach_watch_reloads_with_its_lines_in_the_log() {
    let project = project_answering("v1", "");
    let started = project.run_serve_safe(&["--detach", "--watch"]);
    assert_eq!(started.code(), Some(0), "{}", started.describe());
    let port = project.read_json(FIXTURE_INSTANCE).expect("a .json")["port"]
        .as_u64()
        .expect("a port") as u16;
    assert_eq!(body(port), "v1");
    set_body(&project, "v2");
    wait_for_body_or(port, "v2", || project.run_portguard(&["logs"]).describe());
    let logs = project.run_portguard(&["logs"]);
    assert!(
        logs.stdout.contains("Reloaded in") && logs.stdout.contains("after src/main.rs changed"),
        "{}",
        logs.describe()
    );
    let stopped = project.run_portguard(&["stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    if let Err(left) = project.wait_until_no_process_left(Duration::from_secs(10)) {
        panic!("processes left: {left:?}");
    }
}

#[test]
fn in_env_handoff_the_gap_is_a_stop_and_a_start_never_the_build() {
    let project = TestProject::fixture().own_target_dir();
    set_body(&project, "v1");
    project.write_file("build.rs", BUILD_SCRIPT);
    project.set_metadata_on_free_port("handoff = \"env\"");
    let build = Duration::from_secs(2);
    set_build_delay(&project, build);
    let (mut server, port) = serve(&project, &["--watch", "--", "--graceful"]);

    let traffic = under_traffic(port, || {
        set_body(&project, "v2");
        wait_for_body(port, "v2", &server);
    });
    eprintln!("traffic during the reload: {traffic:?}");
    assert_swapped(&traffic, "v1", "v2");
    // The old server binds its own socket here: connections waiting in its backlog when it
    // exits are reset by the kernel, and the port refuses until the new one binds. Only that.
    assert!(
        traffic
            .failed
            .iter()
            .all(|failure| failure.contains("Connection reset")),
        "failed: {traffic:#?}"
    );
    assert!(
        traffic.longest_wait < build / 2,
        "the server was down for the build ({:?} with a {build:?} build): {traffic:#?}",
        traffic.longest_wait
    );
    stop(&project, &mut server);
}

#[test]
fn watch_started_on_a_compile_error_serves_after_the_fix() {
    let project = project_answering("v1", "");
    project.write_file(
        "src/main.rs",
        "fn main() {\n    server_core::main_with(undefined_name)\n}\n",
    );
    let mut server = project.serve(&["--watch"]);
    server
        .wait_for_stderr("the next change rebuilds and starts it", RELOAD_TIMEOUT)
        .unwrap_or_else(|stderr| panic!("the failed start did not wait for a change:\n{stderr}"));
    assert!(server.is_running(), "the run ended:\n{}", server.stderr());

    set_body(&project, "v2");
    let port = ready_port(&server, RELOAD_TIMEOUT);
    assert_eq!(body(port), "v2");
    stop(&project, &mut server);
}

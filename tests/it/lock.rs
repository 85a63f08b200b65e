//! The instance lock: one copy of an instance at a time, decided by an OS lock and never by
//! files that a crash or `cargo clean` could leave or remove.

use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

const READY: Duration = Duration::from_mins(1);

fn start_ready(project: &TestProject, args: &[&str]) -> Running {
    let running = project.serve(args);
    running
        .wait_for_stderr("Running on http://", READY)
        .unwrap_or_else(|stderr| panic!("server never became ready:\n{stderr}"));
    running
}

#[test]
fn a_second_start_is_refused_with_pid_port_and_start_time() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let _first = start_ready(&project, &[]);
    let record = project.read_json(FIXTURE_INSTANCE).unwrap();
    let pid = project.read_pid(FIXTURE_INSTANCE).unwrap();

    let second = project.serve_safe(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    assert!(stderr.contains(&format!("port {port}")), "{stderr}");
    assert!(
        stderr.contains(record["started_at"].as_str().unwrap()),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Compiling"),
        "nothing was built:\n{stderr}"
    );
    // The refused start touched nothing of the running one.
    assert_eq!(project.read_pid(FIXTURE_INSTANCE), Some(pid));
    assert_eq!(http_get(port, "/health").map(|r| r.0), Ok(200));
}

#[test]
fn another_instance_name_runs_a_second_copy_on_another_port() {
    let project = TestProject::fixture();
    let port = free_port();
    let fallback = free_port();
    project.set_metadata(&format!(
        "preferred-port = {port}\nfallback-ports = [{fallback}]"
    ));
    let _first = start_ready(&project, &[]);
    let _second = start_ready(&project, &["--instance", "second"]);
    let first = project.read_json(FIXTURE_INSTANCE).unwrap();
    let second = project.read_json("second").unwrap();
    assert_eq!(first["port"], port);
    assert_eq!(second["port"], fallback);
    assert_ne!(first["pid"], second["pid"]);
    let (_, info) = http_get(fallback, "/info").unwrap();
    assert!(info.contains("\"portguard_instance\":\"second\""), "{info}");
}

#[test]
fn eight_simultaneous_starts_leave_exactly_one_running() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("handoff = \"socket\"");
    let mut starts: Vec<Running> = (0..8).map(|_| project.serve(&[])).collect();
    // Seven are refused; the eighth keeps running.
    let settled = wait_until(Duration::from_secs(30), || {
        starts
            .iter_mut()
            .map(Running::is_running)
            .filter(|running| !running)
            .count()
            == 7
    });
    assert!(settled, "expected seven refusals and one running copy");
    let mut winners = Vec::new();
    for start in &mut starts {
        if start.is_running() {
            winners.push(start);
        } else {
            let status = start.wait_exit(Duration::from_secs(1)).unwrap();
            assert_eq!(status.code(), Some(1), "{}", start.stderr());
            assert!(start.stderr().contains("already"), "{}", start.stderr());
        }
    }
    assert_eq!(winners.len(), 1);
    winners[0]
        .wait_for_stderr("Running on", READY)
        .expect("the winner serves");
    assert!(!winners[0].stderr().contains("already"));
}

#[test]
fn cargo_clean_during_a_run_does_not_let_a_second_copy_start() {
    // `cargo clean` wipes the target dir, so this project must not share it.
    let project = TestProject::fixture().own_target_dir();
    let port = project.set_metadata_on_free_port("");
    let _first = start_ready(&project, &[]);
    let clean = project
        .command(cargo_bin(), &["clean"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(clean.success());
    let second = project.serve_safe(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert_eq!(http_get(port, "/health").map(|r| r.0), Ok(200));
}

#[test]
fn garbage_state_files_are_reported_and_replaced() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    std::fs::create_dir_all(project.state_dir()).unwrap();
    std::fs::write(project.json_file(FIXTURE_INSTANCE), "{ not json").unwrap();
    std::fs::write(project.pid_file(FIXTURE_INSTANCE), "1\n").unwrap();
    let running = start_ready(&project, &[]);
    assert!(
        running.stderr().contains("removed unreadable state"),
        "{}",
        running.stderr()
    );
    let record = project.read_json(FIXTURE_INSTANCE).expect("a fresh record");
    assert_eq!(
        Some(record["pid"].as_u64().unwrap() as u32),
        project.read_pid(FIXTURE_INSTANCE)
    );
    assert_ne!(project.read_pid(FIXTURE_INSTANCE), Some(1));
}

#[test]
fn the_record_describes_the_running_server() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let running = start_ready(&project, &[]);
    let record = project.read_json(FIXTURE_INSTANCE).unwrap();
    let pid = project.read_pid(FIXTURE_INSTANCE).unwrap();
    assert_eq!(record["pid"], pid);
    assert_eq!(record["supervisor_pid"], running.pid());
    assert_eq!(record["port"], port);
    assert_eq!(record["host"], "127.0.0.1");
    assert_eq!(record["url"], format!("http://127.0.0.1:{port}"));
    assert_eq!(record["handoff"], "socket");
    assert_eq!(record["package"], "fixture-server");
    assert_eq!(record["bin"], FIXTURE_INSTANCE);
    assert_eq!(record["portguard_version"], env!("CARGO_PKG_VERSION"));
    let started = record["started_at"].as_str().unwrap();
    assert!(
        started.ends_with('Z') && started.contains('T'),
        "RFC 3339 UTC: {started}"
    );
    assert!(record["pid_start_time"].is_string(), "{record}");
    assert_eq!(
        std::fs::read_to_string(project.pid_file(FIXTURE_INSTANCE)).unwrap(),
        format!("{pid}\n")
    );
}

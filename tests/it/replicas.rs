//! `--replicas N`: N servers accept on the one socket portguard bound; a crashed replica is
//! replaced, a restart replaces them one at a time without refusing a connection, and a stop
//! leaves nothing behind.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::*;

const EXIT: Duration = Duration::from_secs(30);

/// Starts the fixture with `--replicas 3` in socket handoff and waits until it answers.
fn start_three(project: &TestProject) -> (Running, u16) {
    project.set_metadata_on_free_port("handoff = \"socket\"\nshutdown-timeout-ms = 5000");
    let server = project.serve(&["--replicas", "3"]);
    let port = ready_port(&server, READY_TIMEOUT);
    (server, port)
}

/// The replica pids in the record, once it lists `count` of them.
fn recorded_replicas(project: &TestProject, count: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    let found = wait_until(Duration::from_secs(10), || {
        pids = project
            .read_json(FIXTURE_INSTANCE)
            .and_then(|record| {
                record["replicas"].as_array().map(|list| {
                    list.iter()
                        .filter_map(|pid| pid.as_u64().map(|pid| pid as u32))
                        .collect()
                })
            })
            .unwrap_or_default();
        pids.len() == count
    });
    assert!(found, "the record never listed {count} replicas: {pids:?}");
    pids
}

/// `GET /info` answered by a server: its pid. A connection cut off because the replica that
/// had accepted it was killed is sent again once, as a client would.
fn pid_answering(port: u16) -> Result<u32, String> {
    let timeout = Duration::from_secs(5);
    let mut result = http_get_within(port, "/info", timeout);
    if let Err(err) = &result
        && matches!(
            err.kind,
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
        )
    {
        result = http_get_within(port, "/info", timeout);
    }
    let (status, body) = result.map_err(|err| err.message)?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|info| info["pid"].as_u64())
        .map(|pid| pid as u32)
        .ok_or_else(|| format!("no pid in {body}"))
}

/// What the socket at `pid`'s fd 3 is (`socket:[INODE]`).
#[cfg(target_os = "linux")]
fn fd_target(pid: u32, fd: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|path| path.display().to_string())
}

/// The value of `name` in `pid`'s environment.
#[cfg(target_os = "linux")]
fn environ(pid: u32, name: &str) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    bytes.split(|&byte| byte == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        entry.strip_prefix(&format!("{name}=")).map(str::to_owned)
    })
}

/// Stops the instance with `cargo portguard stop` and checks that nothing is left.
fn stop_and_check_clean(project: &TestProject, server: &mut Running, port: u16) {
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    let status = server.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
    assert!(
        server.stderr().contains("Stopped 3 replicas"),
        "{}",
        server.stderr()
    );
    if let Err(left) = project.wait_until_no_process_left(Duration::from_secs(10)) {
        panic!("processes left after stop: {left:?}");
    }
    assert!(
        wait_until_port_free(port, Duration::from_secs(5)),
        "port {port} still held"
    );
    assert!(!project.json_file(FIXTURE_INSTANCE).exists());
}

#[test]
fn three_replicas_share_one_socket_and_split_the_traffic() {
    let project = TestProject::fixture();
    let (mut server, port) = start_three(&project);

    let status = project.run_portguard(&["status", "--json"]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("status is JSON");
    let entry = &json["instances"][0];
    let replicas: Vec<u32> = entry["replicas"]
        .as_array()
        .unwrap_or_else(|| panic!("no replicas in {entry}"))
        .iter()
        .map(|pid| pid.as_u64().expect("a pid") as u32)
        .collect();
    assert_eq!(replicas.len(), 3, "{entry}");
    assert_eq!(entry["pid"], replicas[0], "{entry}");
    assert_eq!(replicas.iter().collect::<HashSet<_>>().len(), 3);
    for &pid in &replicas {
        assert!(process_alive(pid), "replica {pid} is not alive");
    }
    let human = project.run_portguard(&["status"]);
    let line = format!(
        "replicas: {}, {}, {}",
        replicas[0], replicas[1], replicas[2]
    );
    assert!(human.stdout.contains(&line), "{}", human.describe());

    #[cfg(target_os = "linux")]
    {
        let supervisor = entry["supervisor_pid"].as_u64().expect("a supervisor") as u32;
        let socket = fd_target(replicas[0], 3).expect("replica 0 has fd 3");
        assert!(socket.starts_with("socket:"), "fd 3 is {socket}");
        let held_by_supervisor = std::fs::read_dir(format!("/proc/{supervisor}/fd"))
            .expect("the supervisor's fds")
            .filter_map(Result::ok)
            .any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|t| t.display().to_string() == socket)
            });
        assert!(
            held_by_supervisor,
            "fd 3 ({socket}) is not the supervisor's socket"
        );
        for (index, &pid) in replicas.iter().enumerate() {
            assert_eq!(
                fd_target(pid, 3).as_deref(),
                Some(socket.as_str()),
                "replica {pid}"
            );
            assert_eq!(environ(pid, "PORTGUARD_REPLICA"), Some(index.to_string()));
            assert_eq!(environ(pid, "LISTEN_PID"), Some(pid.to_string()));
        }
    }

    let started = Instant::now();
    let mut answered = HashSet::new();
    for _ in 0..200 {
        if answered.len() >= 2 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        answered.insert(pid_answering(port).expect("GET /info"));
    }
    assert!(
        answered.len() >= 2,
        "only {answered:?} answered in {:?}",
        started.elapsed()
    );
    assert!(
        answered.iter().all(|pid| replicas.contains(pid)),
        "{answered:?}"
    );

    stop_and_check_clean(&project, &mut server, port);
    for pid in replicas {
        assert!(!process_alive(pid), "replica {pid} survived the stop");
    }
}

#[test]
fn a_killed_replica_is_replaced_while_the_service_answers() {
    let project = TestProject::fixture();
    let (mut server, port) = start_three(&project);
    let before = recorded_replicas(&project, 3);
    let victim = before[1];
    kill_process(victim, Signal::KILL);

    let mut after = before.clone();
    let mut failures = Vec::new();
    let replaced = wait_until(Duration::from_secs(20), || {
        if let Err(err) = pid_answering(port) {
            failures.push(err);
        }
        after = recorded_replicas(&project, 3);
        !after.contains(&victim)
    });
    assert!(
        replaced,
        "replica {victim} was not replaced: {after:?}\n{}",
        server.stderr()
    );
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
    assert!(
        process_alive(after[1]),
        "the replacement {} is not alive",
        after[1]
    );
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    let warning = format!(
        "warning: replica 1 (pid {victim}) exited with signal 9 (SIGKILL); restarting in 1s"
    );
    assert!(server.stderr().contains(&warning), "{}", server.stderr());
    assert!(
        server.is_running(),
        "the supervisor ended:\n{}",
        server.stderr()
    );

    stop_and_check_clean(&project, &mut server, port);
}

/// Sends `GET /info` in a loop until `done`: (answered, refused or failed, pids seen).
fn client_loop(port: u16, done: Arc<AtomicBool>) -> JoinHandle<(usize, Vec<String>, HashSet<u32>)> {
    thread::spawn(move || {
        let (mut answered, mut failed, mut pids) = (0, Vec::new(), HashSet::new());
        let started = Instant::now();
        while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_mins(1) {
            let mut result = http_get_within(port, "/info", Duration::from_secs(30));
            // A connection a stopped replica had accepted is cut off with it; sent again, it
            // must be answered.
            if let Err(err) = &result
                && matches!(
                    err.kind,
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                )
            {
                result = http_get_within(port, "/info", Duration::from_secs(30));
            }
            match result {
                Ok((200, body)) => {
                    answered += 1;
                    if let Some(pid) = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|info| info["pid"].as_u64())
                    {
                        pids.insert(pid as u32);
                    }
                }
                Ok((status, body)) => failed.push(format!("{status}: {body}")),
                Err(err) => failed.push(format!("{:?}: {}", err.kind, err.message)),
            }
            thread::sleep(Duration::from_millis(5));
        }
        (answered, failed, pids)
    })
}

#[test]
fn restart_replaces_every_replica_and_refuses_nothing() {
    let project = TestProject::fixture();
    let (mut server, port) = start_three(&project);
    let before = recorded_replicas(&project, 3);

    let done = Arc::new(AtomicBool::new(false));
    let client = client_loop(port, Arc::clone(&done));
    thread::sleep(Duration::from_millis(300));
    let restart = project.run_portguard(&["restart"]);
    assert_eq!(restart.code(), Some(0), "{}", restart.describe());
    let after = recorded_replicas(&project, 3);
    thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::SeqCst);
    let (answered, failed, pids) = client.join().expect("the client thread panicked");

    assert!(failed.is_empty(), "refused or failed: {failed:?}");
    assert!(answered >= 10, "too little traffic: {answered}");
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "not every replica was replaced: {before:?} -> {after:?}"
    );
    for pid in &before {
        assert!(!process_alive(*pid), "old replica {pid} survived");
    }
    assert!(
        pids.iter().any(|pid| after.contains(pid)),
        "no new replica answered: {pids:?}"
    );
    let record = project.read_json(FIXTURE_INSTANCE).expect("a .json");
    assert_eq!(record["ready"], true, "{record}");
    assert_eq!(record["pid"], after[0], "{record}");
    assert!(
        server.is_running(),
        "the supervisor ended:\n{}",
        server.stderr()
    );

    // Ctrl-C stops them all too.
    server.signal_group(Signal::INT);
    let status = server.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
    if let Err(left) = project.wait_until_no_process_left(Duration::from_secs(10)) {
        panic!("processes left after Ctrl-C: {left:?}");
    }
    assert!(wait_until_port_free(port, Duration::from_secs(5)));
}

#[test]
fn replicas_need_socket_handoff_and_at_least_one() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("handoff = \"env\"");
    let env = run_within(project.serve_safe(&["--replicas", "2"]), EXIT);
    assert_eq!(env.code(), Some(2), "{}", env.describe());
    assert!(env.stderr.contains("--replicas 2"), "{}", env.describe());
    assert!(env.stderr.contains("socket"), "{}", env.describe());

    let zero = run_within(project.serve_safe(&["--replicas", "0"]), EXIT);
    assert_eq!(zero.code(), Some(2), "{}", zero.describe());
    assert!(zero.stderr.contains("--replicas"), "{}", zero.describe());
    assert!(!project.json_file(FIXTURE_INSTANCE).exists());
    assert!(project.processes_left().is_empty());
}

fn kill_process(pid: u32, signal: Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, signal).expect("signal the replica");
}

/// SIGUSR2 starts a rolling restart whose first replica ignores SIGTERM; `stop` lands while the
/// restart waits for it. The run must end: exit 0, no replacement started, nothing left.
fn stop_during_a_rolling_restart(stop: impl FnOnce(&TestProject, &Running)) {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("handoff = \"socket\"\nshutdown-timeout-ms = 2000");
    let mut server = project.serve(&["--verbose", "--replicas", "2", "--", "--ignore-sigterm"]);
    let port = ready_port(&server, READY_TIMEOUT);
    let before = recorded_replicas(&project, 2);

    kill_process(server.pid(), Signal::USR2);
    server
        .wait_for_stderr(
            &format!("Stopping the old replica 0 (pid {})", before[0]),
            EXIT,
        )
        .unwrap_or_else(|stderr| panic!("the restart never stopped replica 0:\n{stderr}"));
    stop(&project, &server);

    let status = server.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
    let stderr = server.stderr();
    assert!(
        !stderr.contains("Restarted"),
        "the restart did not complete:\n{stderr}"
    );
    // Replica 0's replacement started beside it and was stopped with it; replica 1 was never
    // replaced.
    assert_eq!(
        server.stdout().matches("fixture: listening").count(),
        3,
        "only the first two servers and one replacement ever listened:\n{}",
        server.stdout()
    );
    for pid in before {
        assert!(!process_alive(pid), "replica {pid} survived");
        assert!(!group_exists(pid), "replica {pid}'s process group is left");
    }
    if let Err(left) = project.wait_until_no_process_left(Duration::from_secs(10)) {
        panic!("processes left after the stop: {left:?}");
    }
    assert!(
        wait_until_port_free(port, Duration::ZERO),
        "port {port} still held"
    );
    assert!(!project.json_file(FIXTURE_INSTANCE).exists());
    // The lock is free: the next start takes it at once.
    let again = project.run_serve_safe(&["--detach"]);
    assert_eq!(again.code(), Some(0), "{}", again.describe());
    let stopped = project.run_portguard(&["stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
}

#[test]
fn portguard_stop_during_a_rolling_restart_ends_the_run() {
    stop_during_a_rolling_restart(|project, _| {
        let stop = project.run_portguard(&["stop"]);
        assert_eq!(stop.code(), Some(0), "{}", stop.describe());
        assert!(
            stop.stderr.contains("SIGKILL was needed"),
            "{}",
            stop.describe()
        );
    });
}

#[test]
fn sigterm_during_a_rolling_restart_ends_the_run() {
    stop_during_a_rolling_restart(|_, server| server.signal(Signal::TERM));
}

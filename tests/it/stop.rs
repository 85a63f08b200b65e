//! `cargo portguard stop` and `restart`, and `serve-safe --force`: a running instance is
//! stopped (or restarted) for good, its port freed and its files removed, and a process that
//! cannot be proved to be the recorded one is never signalled.

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::*;

/// Starts the fixture under `cargo serve-safe` and waits until it answers.
fn start(project: &TestProject, args: &[&str]) -> (Running, Ready) {
    let server = project.serve(args);
    let ready = ready(project, &server);
    (server, ready)
}

/// Starts another instance of the fixture and waits until it answers; its port.
fn start_instance(project: &TestProject, instance: &str) -> (Running, u16) {
    let server = project.serve(&["--instance", instance]);
    server
        .wait_for_stderr(READY_LINE, READY_TIMEOUT)
        .unwrap_or_else(|stderr| panic!("`{instance}` never became ready:\n{stderr}"));
    let record = project.read_json(instance).expect("a .json");
    let port = record["port"].as_u64().expect("a port") as u16;
    (server, port)
}

/// The lines of `text` whose first word is `verb` (a cargo-style status line).
fn lines_with_verb<'a>(text: &'a str, verb: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| line.split_whitespace().next() == Some(verb))
        .collect()
}

/// What `stop` leaves of a server: no process, and the port free at once (`stop` returns
/// only once both hold).
fn assert_server_gone(pid: u32, port: u16) {
    assert!(!process_alive(pid), "server pid {pid} survived");
    assert!(
        wait_until_port_free(port, Duration::ZERO),
        "port {port} held"
    );
}

/// Waits for the supervisor to exit, which must be with code 0, as for a requested stop.
fn assert_exits_0(server: &mut Running) {
    assert_eq!(
        server.wait_exit(EXIT_TIMEOUT).map(|status| status.code()),
        Some(Some(0)),
        "{}",
        server.stderr()
    );
}

fn assert_state_files_gone(project: &TestProject, instance: &str) {
    assert!(!project.pid_file(instance).exists(), "{instance}.pid left");
    assert!(
        !project.json_file(instance).exists(),
        "{instance}.json left"
    );
}

#[test]
fn stop_ends_a_cooperative_server_frees_its_port_and_removes_its_files() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let (mut server, ready) = start(&project, &[]);
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    let supervisor = server.pid();

    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    // `stop` returns only once the server is gone and its port is free: no waiting here.
    assert!(
        !process_alive(pid),
        "server pid {pid} still alive after stop"
    );
    assert!(
        wait_until_port_free(port, Duration::ZERO),
        "port {port} still held after stop"
    );

    let stderr = &stop.stderr;
    let stopping = lines_with_verb(stderr, "Stopping");
    assert_eq!(stopping.len(), 1, "{stderr}");
    assert!(stopping[0].contains(FIXTURE_INSTANCE), "{stderr}");
    assert!(stopping[0].contains(&pid.to_string()), "{stderr}");
    let signalled = lines_with_verb(stderr, "Signalled");
    assert_eq!(signalled.len(), 1, "{stderr}");
    assert!(signalled[0].contains("SIGTERM"), "{stderr}");
    assert!(signalled[0].contains(&supervisor.to_string()), "{stderr}");
    let stopped = lines_with_verb(stderr, "Stopped");
    assert_eq!(stopped.len(), 1, "{stderr}");
    assert!(stopped[0].contains(&pid.to_string()), "{stderr}");
    assert!(stopped[0].contains(&ready.port.to_string()), "{stderr}");
    assert!(
        stop.stdout.is_empty(),
        "status lines go to stderr:\n{}",
        stop.describe()
    );

    let status = server
        .wait_exit(EXIT_TIMEOUT)
        .expect("the supervisor did not exit");
    assert_eq!(
        status.code(),
        Some(0),
        "a requested stop exits 0:\n{}",
        server.stderr()
    );
    assert_state_files_gone(&project, FIXTURE_INSTANCE);
    project
        .wait_until_no_process_left(Duration::from_secs(10))
        .expect("nothing of the instance is left running");
}

#[test]
fn stop_with_a_timeout_kills_a_server_that_ignores_sigterm() {
    let project = TestProject::fixture();
    // The instance's own grace period would outlast the test.
    let port = project.set_metadata_on_free_port("shutdown-timeout-ms = 60000");
    let (mut server, _) = start(&project, &["--", "--ignore-sigterm"]);
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");

    let asked = Instant::now();
    let stop = project.run_portguard(&["stop", "--timeout", "1"]);
    let took = asked.elapsed();
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(
        took >= Duration::from_secs(1),
        "gave up on SIGTERM before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(30),
        "waited for shutdown-timeout-ms instead of --timeout: {took:?}"
    );
    assert!(
        !lines_with_verb(&stop.stderr, "Killing").is_empty(),
        "says it escalated:\n{}",
        stop.describe()
    );
    assert_server_gone(pid, port);
    assert_exits_0(&mut server);
    assert_state_files_gone(&project, FIXTURE_INSTANCE);
}

#[test]
fn stop_of_a_frozen_supervisor_kills_everything_and_cleans_up() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let (mut server, _) = start(&project, &[]);
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    // A hung supervisor: it holds the lock but answers no signal but SIGKILL.
    server.signal(Signal::STOP);

    let asked = Instant::now();
    let stop = project.run_portguard(&["stop", "--timeout", "1"]);
    let took = asked.elapsed();
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert_server_gone(pid, port);
    let status = server
        .wait_exit(EXIT_TIMEOUT)
        .expect("the frozen supervisor survived");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed: {status}"
    );
    // `stop` killed it and says it stopped it: what it leaves is no stale state for the
    // next command to warn about.
    assert_state_files_gone(&project, FIXTURE_INSTANCE);
    let after = project.run_portguard(&["status"]);
    assert_eq!(after.code(), Some(3), "{}", after.describe());
    assert!(
        !after.stdout.contains("stale") && after.stderr.is_empty(),
        "{}",
        after.describe()
    );
}

#[test]
fn stop_when_nothing_runs_succeeds_and_says_so() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    // No state folder at all.
    for args in [&["stop"][..], &["stop", "--all"]] {
        let stop = project.run_portguard(args);
        assert_eq!(stop.code(), Some(0), "{args:?}: {}", stop.describe());
        assert!(
            stop.stderr.contains("no instance is running"),
            "{args:?}: {}",
            stop.describe()
        );
    }

    // A state folder whose instance has stopped.
    let (mut server, _) = start(&project, &[]);
    server.signal(Signal::TERM);
    server.wait_exit(EXIT_TIMEOUT).expect("stopped");
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(
        stop.stderr.contains("no instance is running"),
        "{}",
        stop.describe()
    );
    let stop = project.run_portguard(&["stop", "--instance", FIXTURE_INSTANCE]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(stop.stderr.contains("not running"), "{}", stop.describe());
}

#[test]
fn stop_refuses_to_signal_a_pid_whose_start_time_differs_from_the_record() {
    let project = TestProject::fixture();
    let port = free_port();
    // Some other program that now has the recorded supervisor's pid.
    let mut bystander = start_background(project.command("sleep", &["60"]));
    let pid = bystander.pid();
    assert!(process_alive(pid));

    // A held lock, as a running supervisor's, with a record that names the bystander.
    std::fs::create_dir_all(project.state_dir()).expect("create .portguard");
    let lock = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(project.lock_file(FIXTURE_INSTANCE))
        .expect("open the lock file");
    // Fully qualified: std's File::try_lock has the same name.
    fs4::FileExt::try_lock(&lock).expect("lock the instance");
    let record = serde_json::json!({
        "instance": FIXTURE_INSTANCE,
        "pid": pid,
        "supervisor_pid": pid,
        "port": port,
        "host": "127.0.0.1",
        "url": format!("http://127.0.0.1:{port}"),
        "handoff": "env",
        "started_at": "2020-01-01T00:00:00Z",
        "package": "fixture-server",
        "bin": FIXTURE_INSTANCE,
        "manifest_path": project.manifest_path(),
        "portguard_version": env!("CARGO_PKG_VERSION"),
        // No process started at tick 1 is still running.
        "pid_start_time": "1",
        "supervisor_start_time": "1",
        "ready": true,
        "health_path": null,
        "check_timeout_ms": 1000,
        "shutdown_timeout_ms": 1000,
    });
    std::fs::write(project.json_file(FIXTURE_INSTANCE), record.to_string()).expect("write");
    std::fs::write(project.pid_file(FIXTURE_INSTANCE), format!("{pid}\n")).expect("write");

    for args in [
        &["stop"][..],
        &["stop", "--instance", FIXTURE_INSTANCE],
        &["stop", "--all"],
        &["stop", "--timeout", "1"],
    ] {
        let stop = project.run_portguard(args);
        assert_eq!(stop.code(), Some(1), "{args:?}: {}", stop.describe());
        assert!(
            stop.stderr
                .contains(&format!("refusing to signal pid {pid}")),
            "{args:?}: {}",
            stop.describe()
        );
        assert!(bystander.is_running(), "{args:?} signalled pid {pid}");
    }
    let restart = project.run_portguard(&["restart"]);
    assert_eq!(restart.code(), Some(1), "{}", restart.describe());
    assert!(
        restart
            .stderr
            .contains(&format!("refusing to signal pid {pid}")),
        "{}",
        restart.describe()
    );
    assert!(bystander.is_running(), "restart signalled pid {pid}");
    // Given time to act on a signal, it is still there.
    thread::sleep(Duration::from_millis(200));
    assert!(bystander.is_running() && process_alive(pid));
    drop(lock);
}

#[test]
fn stop_all_stops_every_running_instance() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let (mut first, first_port) = start_instance(&project, FIXTURE_INSTANCE);
    let (mut second, second_port) = start_instance(&project, "second");
    assert_ne!(first_port, second_port);
    let first_pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    let second_pid = project.read_pid("second").expect("a .pid");

    // Which one? Without a name or --all, `stop` touches neither.
    let ambiguous = project.run_portguard(&["stop"]);
    assert_eq!(ambiguous.code(), Some(2), "{}", ambiguous.describe());
    assert!(
        ambiguous.stderr.contains("second"),
        "{}",
        ambiguous.describe()
    );
    assert!(first.is_running() && second.is_running());

    let stop = project.run_portguard(&["stop", "--all"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    let stopped = lines_with_verb(&stop.stderr, "Stopped");
    assert_eq!(stopped.len(), 2, "{}", stop.describe());
    assert!(stopped.iter().any(|line| line.contains(FIXTURE_INSTANCE)));
    assert!(stopped.iter().any(|line| line.contains("`second`")));
    for (pid, port) in [(first_pid, first_port), (second_pid, second_port)] {
        assert_server_gone(pid, port);
    }
    for server in [&mut first, &mut second] {
        assert_exits_0(server);
    }
    assert_state_files_gone(&project, FIXTURE_INSTANCE);
    assert_state_files_gone(&project, "second");
}

#[test]
fn force_replaces_a_running_instance_on_the_same_port() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let (mut old, old_ready) = start(&project, &[]);
    let old_pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    assert_eq!(old_ready.port, port);

    let new = project.serve(&["--force"]);
    let new_ready = ready(&project, &new);
    assert_eq!(new_ready.port, port, "the new copy takes the same port");
    assert_ne!(new_ready.info["pid"], old_pid, "a new server answers");
    assert!(!process_alive(old_pid), "the old server {old_pid} survived");
    // The old supervisor was asked to stop.
    assert_exits_0(&mut old);
    let stderr = new.stderr();
    let stopped = lines_with_verb(&stderr, "Stopped");
    assert!(
        stopped
            .iter()
            .any(|line| line.contains(&old_pid.to_string())),
        "says what it stopped:\n{stderr}"
    );
    assert_eq!(
        project.read_json(FIXTURE_INSTANCE).expect("a .json")["supervisor_pid"],
        new.pid()
    );
}

/// What a client that kept sending requests during a restart saw.
#[derive(Debug, Default)]
struct Traffic {
    answered: usize,
    /// Requests cut off while the old server died, answered when sent again.
    retried: usize,
    refused: Vec<String>,
    unanswered: Vec<String>,
    /// The server pids that answered, in order, without consecutive repeats: during a swap in
    /// socket handoff the old and the new server both accept, so they may alternate.
    pids: Vec<u64>,
}

/// Sends `GET /info` to `port` in a loop until `done` is set (at most for a minute).
fn send_requests(port: u16, done: Arc<AtomicBool>) -> JoinHandle<Traffic> {
    thread::spawn(move || {
        let mut traffic = Traffic::default();
        let started = Instant::now();
        let timeout = Duration::from_secs(30);
        while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_mins(1) {
            let mut result = http_get_within(port, "/info", timeout);
            // A connection the old server had accepted when it was stopped is cut off: the
            // socket stays open across the restart, but that one connection was the old
            // server's. Sent again, it must be answered (by the new server).
            if let Err(err) = &result
                && matches!(
                    err.kind,
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                )
            {
                traffic.retried += 1;
                result = http_get_within(port, "/info", timeout);
            }
            match result {
                Ok((200, body)) => {
                    traffic.answered += 1;
                    let pid = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|info| info["pid"].as_u64());
                    if let Some(pid) = pid
                        && traffic.pids.last() != Some(&pid)
                    {
                        traffic.pids.push(pid);
                    }
                }
                Ok((status, body)) => traffic.unanswered.push(format!("{status}: {body}")),
                Err(err) if err.kind == ErrorKind::ConnectionRefused => {
                    traffic.refused.push(err.message);
                }
                Err(err) => traffic.unanswered.push(err.message),
            }
            thread::sleep(Duration::from_millis(5));
        }
        traffic
    })
}

/// Restarts the running instance with `restart` while a client sends requests, and checks
/// that no request was refused or lost and that a new server answers.
fn restart_under_traffic(project: &TestProject, server: &mut Running, restart: impl FnOnce()) {
    let port = project.read_json(FIXTURE_INSTANCE).expect("a .json")["port"]
        .as_u64()
        .expect("a port") as u16;
    let old_pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    let done = Arc::new(AtomicBool::new(false));
    let client = send_requests(port, Arc::clone(&done));
    // Some traffic before the restart.
    thread::sleep(Duration::from_millis(300));

    restart();
    assert!(
        wait_until(READY_TIMEOUT, || project
            .read_json(FIXTURE_INSTANCE)
            .is_some_and(
                |record| record["pid"] != old_pid && record["ready"] == true
            )),
        "the new server never became ready:\n{}",
        server.stderr()
    );
    // And some after it.
    thread::sleep(Duration::from_secs(1));
    done.store(true, Ordering::SeqCst);
    let traffic = client.join().expect("the client thread panicked");
    eprintln!("traffic during the restart: {traffic:?}");

    assert!(traffic.refused.is_empty(), "refused: {traffic:#?}");
    assert!(traffic.unanswered.is_empty(), "unanswered: {traffic:#?}");
    assert!(traffic.answered >= 10, "too little traffic: {traffic:#?}");
    let new_pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    assert_ne!(new_pid, old_pid);
    assert_eq!(
        traffic.pids.first(),
        Some(&u64::from(old_pid)),
        "answered by the old server first: {traffic:#?}"
    );
    assert_eq!(
        traffic.pids.last(),
        Some(&u64::from(new_pid)),
        "answered by the new server last: {traffic:#?}"
    );
    assert!(
        traffic
            .pids
            .iter()
            .all(|&pid| pid == u64::from(old_pid) || pid == u64::from(new_pid)),
        "answered by the old and the new server only: {traffic:#?}"
    );
    assert_eq!(info(port)["pid"], new_pid);
    assert!(!process_alive(old_pid), "the old server {old_pid} survived");
    assert!(
        server.is_running(),
        "the supervisor stayed:\n{}",
        server.stderr()
    );
    assert_eq!(
        project.read_json(FIXTURE_INSTANCE).expect("a .json")["port"],
        port
    );
}

#[test]
fn restart_in_socket_handoff_refuses_no_connection() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("handoff = \"socket\"");
    let (mut server, _) = start(&project, &[]);
    let old_pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    let mut restart = None;
    restart_under_traffic(&project, &mut server, || {
        restart = Some(project.run_portguard(&["restart"]));
    });
    let restart = restart.expect("ran");
    assert_eq!(restart.code(), Some(0), "{}", restart.describe());
    assert!(
        restart.stderr.contains(&old_pid.to_string()),
        "{}",
        restart.describe()
    );
    assert!(
        restart.stdout.is_empty(),
        "status lines go to stderr:\n{}",
        restart.describe()
    );
    server.signal(Signal::TERM);
    assert_exits_0(&mut server);
}

#[test]
fn sigusr2_to_the_supervisor_restarts_the_server() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("handoff = \"socket\"");
    let (mut server, _) = start(&project, &[]);
    let old_pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");
    let supervisor = server.pid();
    restart_under_traffic(&project, &mut server, || {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(supervisor as i32).expect("a pid"),
            Signal::USR2,
        )
        .expect("send SIGUSR2");
    });
    let stderr = server.stderr();
    assert!(
        lines_with_verb(&stderr, "Building")
            .iter()
            .any(|line| line.contains("for a restart") && line.contains(&old_pid.to_string())),
        "the build for the restart says the old server keeps serving:\n{stderr}"
    );
    assert_eq!(
        lines_with_verb(&stderr, "Restarted").len(),
        1,
        "one line for the restart:\n{stderr}"
    );
    server.signal(Signal::TERM);
    assert_exits_0(&mut server);
}

#[test]
fn stop_says_sigkill_was_needed_for_a_server_that_ignores_sigterm() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("shutdown-timeout-ms = 500");
    let (mut server, _) = start(&project, &["--", "--ignore-sigterm"]);
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");

    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    let stopped = lines_with_verb(&stop.stderr, "Stopped");
    assert_eq!(stopped.len(), 1, "{}", stop.describe());
    assert!(
        stopped[0].contains("SIGKILL was needed"),
        "the supervisor had to SIGKILL the server:\n{}",
        stop.describe()
    );
    assert_server_gone(pid, port);
    assert_exits_0(&mut server);

    // A server that obeys SIGTERM is not said to have needed SIGKILL.
    let (mut server, _) = start(&project, &[]);
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(
        !stop.stderr.contains("SIGKILL"),
        "a cooperative server needed no SIGKILL:\n{}",
        stop.describe()
    );
    assert_exits_0(&mut server);
}

#[test]
fn a_stop_during_a_restart_ends_the_run_and_starts_nothing_new() {
    let project = TestProject::fixture();
    // The old server ignores SIGTERM, so the restart spends the grace period stopping it:
    // the stop lands inside it.
    let port =
        project.set_metadata_on_free_port("handoff = \"socket\"\nshutdown-timeout-ms = 2000");
    let (mut server, _) = start(&project, &["--verbose", "--", "--ignore-sigterm"]);
    let pid = project.read_pid(FIXTURE_INSTANCE).expect("a .pid");

    let mut restart = start_background(project.portguard(&["restart"]));
    server
        .wait_for_stderr(
            &format!("Stopping the old server (pid {pid})"),
            EXIT_TIMEOUT,
        )
        .unwrap_or_else(|stderr| panic!("the restart never stopped the server:\n{stderr}"));
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(
        stop.stderr.contains("SIGKILL was needed"),
        "the old server needed SIGKILL, and stop says so:\n{}",
        stop.describe()
    );

    assert_exits_0(&mut server);
    let restarted = restart
        .wait_exit(EXIT_TIMEOUT)
        .expect("restart did not end");
    assert_eq!(
        restarted.code(),
        Some(1),
        "the restart did not complete:\n{}",
        restart.stderr()
    );
    assert!(
        restart.stderr().contains("stopped during the restart"),
        "{}",
        restart.stderr()
    );
    let stderr = server.stderr();
    assert_eq!(
        stderr.matches(READY_LINE).count(),
        1,
        "nothing new was started:\n{stderr}"
    );
    // The new build's server started beside the old one, and was stopped with it.
    assert_eq!(
        server.stdout().matches("fixture: listening").count(),
        2,
        "only the first server and its replacement ever listened:\n{}",
        server.stdout()
    );
    assert!(
        lines_with_verb(&stderr, "Restarted").is_empty(),
        "the restart did not complete:\n{stderr}"
    );
    assert_server_gone(pid, port);
    assert!(
        !group_exists(pid),
        "the server's process group {pid} is left"
    );
    assert_state_files_gone(&project, FIXTURE_INSTANCE);
    project
        .wait_until_no_process_left(Duration::from_secs(10))
        .expect("nothing of the instance is left running");
    // The lock is free: the next start takes it at once.
    let again = project.run_serve_safe(&["--detach"]);
    assert_eq!(again.code(), Some(0), "{}", again.describe());
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
}

/// Whether `pid` is a zombie: exited, not yet reaped.
#[cfg(target_os = "linux")]
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next())
            == Some("Z")
    })
}

/// Starts the fixture under a parent that adopts orphans and never reaps them, SIGKILLs the
/// supervisor, and waits until the server (killed with it by the parent-death signal) is a
/// zombie nobody reaps. The parent, which the caller keeps until it has looked, and the pid of
/// the zombie server.
///
/// The dying supervisor's own wait thread can still reap the server it was waiting for (the
/// server dies when the supervisor's main thread does, before the rest of it is gone): then
/// there is no zombie to look at, and the set-up is made again, a bounded number of times.
#[cfg(target_os = "linux")]
fn zombie_server(project: &TestProject) -> (Background, u32) {
    const ATTEMPTS: usize = 20;
    for _ in 0..ATTEMPTS {
        let (parent, server) = start_and_kill_supervisor(project);
        let mut reaped = false;
        assert!(
            wait_until(Duration::from_secs(10), || {
                reaped = !process_alive(server) && !is_zombie(server);
                reaped || is_zombie(server)
            }),
            "the server {server} neither became a zombie nor went"
        );
        if reaped {
            drop(parent);
            continue;
        }
        assert!(group_exists(server), "its group is still there, zombie");
        return (parent, server);
    }
    panic!("in {ATTEMPTS} attempts the server never became an unreaped zombie");
}

/// One attempt of [`zombie_server`]: the parent, and the server whose supervisor got `SIGKILL`.
#[cfg(target_os = "linux")]
fn start_and_kill_supervisor(project: &TestProject) -> (Background, u32) {
    let serve_safe = serve_safe_bin();
    let parent = start_background(project.command(
        fixture_binary(),
        &[
            "--adopt-orphans",
            serve_safe.to_str().expect("UTF-8 path"),
            "serve-safe",
        ],
    ));
    parent
        .wait_for_stderr(READY_LINE, READY_TIMEOUT)
        .unwrap_or_else(|stderr| panic!("the server never became ready:\n{stderr}"));
    let record = project.read_json(FIXTURE_INSTANCE).expect("a .json");
    let supervisor = record["supervisor_pid"].as_u64().expect("a pid") as u32;
    let server = record["pid"].as_u64().expect("a pid") as u32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(supervisor as i32).expect("a pid"),
        Signal::KILL,
    )
    .expect("SIGKILL the supervisor");
    (parent, server)
}

#[cfg(target_os = "linux")]
#[test]
fn a_zombie_server_is_not_called_running_by_the_next_start_or_stop() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("");
    let still_running = "still running in its process group";

    let (parent, zombie) = zombie_server(&project);
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    assert!(
        !stop.stderr.contains(still_running) && !stop.stderr.contains("outlived"),
        "zombie {zombie} was called running:\n{}",
        stop.describe()
    );
    assert!(
        stop.stderr.contains("was not shut down cleanly"),
        "{}",
        stop.describe()
    );
    assert_state_files_gone(&project, FIXTURE_INSTANCE);
    drop(parent);

    let (parent, zombie) = zombie_server(&project);
    let (mut next, _) = start(&project, &[]);
    let stderr = next.stderr();
    assert!(
        stderr.contains("was not shut down cleanly"),
        "the next start cleaned up:\n{stderr}"
    );
    assert!(
        !stderr.contains(still_running) && !stderr.contains("outlived"),
        "zombie {zombie} was called running:\n{stderr}"
    );
    drop(parent);
    next.signal(Signal::TERM);
    assert_exits_0(&mut next);
}

//! A server's child that leaves the process group (`setsid`) and keeps the listening socket:
//! no signal to the group reaches it, so the supervisor finds it in the process tree or, once
//! orphaned, as a child it adopted. Every way a run ends must end the child too.

use super::*;

/// The process group of `pid`, which must exist.
fn group_of(pid: u32) -> u32 {
    let group = rustix::process::getpgid(rustix::process::Pid::from_raw(pid as i32))
        .unwrap_or_else(|err| panic!("no process group for pid {pid}: {err}"));
    u32::try_from(group.as_raw_nonzero().get()).expect("a process group id is positive")
}

/// Starts the fixture with `fork_option`, one that makes a child leave the server's process
/// group and keep its listening socket, and checks that it did leave.
fn start_with_escaped_child(project: &TestProject, fork_option: &str) -> (Running, u32, u32) {
    let (running, server, child) = start_with_child(project, fork_option);
    assert_eq!(group_of(server), server, "the server leads its group");
    assert_ne!(
        group_of(child),
        server,
        "the child {child} of {fork_option} is still in the server's group"
    );
    (running, server, child)
}

/// The pids of the first `count` children the fixture reported on stdout.
fn reported_children(running: &Running, count: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    let found = wait_until(EXIT, || {
        pids = running
            .stdout()
            .split("fixture: child pid ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        pids.len() >= count
    });
    assert!(
        found,
        "fewer than {count} children reported:\n{}",
        running.stdout()
    );
    pids.truncate(count);
    pids
}

#[test]
fn stop_ends_a_child_that_left_the_process_group() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (running, _, child) = start_with_escaped_child(&project, "--setsid-child");
    stop_ends_child(&project, running, child, port);
}

#[test]
fn stop_ends_a_child_that_left_the_process_group_and_ignores_sigterm() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("shutdown-timeout-ms = 1000");
    let (running, _, child) = start_with_escaped_child(&project, "--setsid-child-ignoring-sigterm");
    stop_ends_child(&project, running, child, port);
}

/// The child is orphaned at once, as a daemon detaches: no walk of the tree below the server
/// finds it, only the supervisor that adopted it.
#[test]
fn stop_ends_a_daemonized_child_holding_the_handed_socket() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let (running, _, child) = start_with_escaped_child(&project, "--daemon-child");
    stop_ends_child(&project, running, child, port);
}

#[test]
fn ctrl_c_ends_a_child_that_left_the_process_group() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (mut running, _, child) = start_with_escaped_child(&project, "--setsid-child");
    // What a terminal's Ctrl-C does: the signal goes to the foreground process group.
    running.signal_group(Signal::INT);
    let status = running.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", running.stderr());
    assert!(
        !process_alive(child),
        "the child {child} outside the server's group survived Ctrl-C:\n{}",
        running.stderr()
    );
    assert_nothing_left(&project, port);
    assert_next_start_works(&project, port);
}

#[test]
fn a_crashed_server_leaves_no_child_outside_its_group() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (running, server, child) = start_with_escaped_child(&project, "--setsid-child");
    crash_server_and_check_its_child_is_gone(&project, running, server, child, port);
}

#[test]
fn restart_ends_the_old_servers_child_outside_its_group() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("");
    let (running, _, old_child) = start_with_escaped_child(&project, "--setsid-child");
    let restarted = project.run_portguard(&["restart"]);
    assert_eq!(restarted.code(), Some(0), "{}", restarted.describe());
    let new_child = reported_children(&running, 2)[1];
    assert!(
        !process_alive(old_child),
        "the old server's child {old_child} survived the restart:\n{}",
        running.stderr()
    );
    assert!(process_alive(new_child), "the new server has no child");
    assert_eq!(http_get(port, "/health").map(|r| r.0), Ok(200));
    stop_ends_child(&project, running, new_child, port);
}

/// A rolling restart ends each old replica's child with it; a stop ends the new ones'.
#[test]
fn replicas_leave_no_child_outside_their_groups() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let running = project.serve(&["--replicas", "2", "--", "--setsid-child"]);
    running
        .wait_for_stderr(READY_LINE, READY)
        .unwrap_or_else(|stderr| panic!("replicas never became ready:\n{stderr}"));
    let old = reported_children(&running, 2);
    let restarted = project.run_portguard(&["restart"]);
    assert_eq!(restarted.code(), Some(0), "{}", restarted.describe());
    let new = reported_children(&running, 4).split_off(2);
    for child in &old {
        assert!(
            !process_alive(*child),
            "an old replica's child {child} survived the restart:\n{}",
            running.stderr()
        );
    }
    let stopped = project.run_portguard(&["stop"]);
    assert_eq!(stopped.code(), Some(0), "{}", stopped.describe());
    let mut running = running;
    let status = running.wait_exit(EXIT).expect("serve-safe did not exit");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", running.stderr());
    for child in &new {
        assert!(
            !process_alive(*child),
            "a replica's child {child} survived the stop:\n{}",
            running.stderr()
        );
    }
    assert_nothing_left(&project, port);
}

//! Only the server's own descriptors reach it: stdin, stdout, stderr and, in socket handoff, the
//! listening socket at fd 3; nothing of portguard's (a detached start's report pipe, a lock, a
//! log it writes itself) and nothing that portguard's own parent left open.
//!
//! The fixture server opens nothing that stays open but its listening socket: in env handoff it
//! binds `PORT` itself, at the lowest free descriptor, which is 3 when nothing leaked; while it
//! answers a request it also holds that connection, which is why the listing below waits for
//! the server to be idle. (It opens a `--health-file` or a `NOTIFY_SOCKET` only when asked to,
//! and closes them again; none of these tests asks.)
//!
//! Linux only: the descriptors are read from /proc.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

const EXIT: Duration = Duration::from_secs(30);

/// The open descriptors of `pid`, each with what it points to (`socket:[INODE]`, a path, ...).
fn descriptors(pid: u32) -> BTreeMap<u32, String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|err| panic!("cannot list the descriptors of pid {pid}: {err}"))
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(entry.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect()
}

/// The inode of a `socket:[INODE]` link target.
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether the socket `inode` is a listening TCP socket (state 0A in /proc/net/tcp{,6}).
fn is_listening(inode: u64) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(3) == Some(&"0A") && fields.get(9) == Some(&inode.to_string().as_str())
            })
        })
    })
}

/// Checks that `pid` has exactly 0, 1, 2 and, at 3, a listening TCP socket (given in socket
/// handoff, its own in env handoff); returns that socket's inode.
///
/// A connection the server is still answering (the readiness probe, a test's request) is a
/// fourth descriptor for a moment: the listing is taken again until it settles.
fn assert_only_own_descriptors(pid: u32, what: &str) -> u64 {
    let mut open = BTreeMap::new();
    let settled = wait_until(Duration::from_secs(10), || {
        open = descriptors(pid);
        open.keys().copied().eq([0, 1, 2, 3])
    });
    assert!(
        settled,
        "{what}: the server (pid {pid}) has descriptors beyond 0, 1, 2 and its socket at 3: {open:?}"
    );
    let inode = socket_inode(&open[&3])
        .unwrap_or_else(|| panic!("{what}: fd 3 of the server is not a socket: {open:?}"));
    assert!(
        is_listening(inode),
        "{what}: fd 3 of the server is a socket that does not listen: {open:?}"
    );
    inode
}

/// The server's pid as it answers `GET /info`, checked against the `.pid` file.
fn server_pid(project: &TestProject, port: u16) -> u32 {
    let pid = info(port)["pid"].as_u64().expect("a pid in /info") as u32;
    assert_eq!(project.read_pid(FIXTURE_INSTANCE), Some(pid));
    pid
}

/// `command` with a file of the test's open without close-on-exec at its start: what a careless
/// parent (a shell, an IDE, a build tool) leaves to portguard. It must stop there.
fn with_inherited_file(project: &TestProject, mut command: Command) -> Command {
    let path = project.dir.path().join("inherited.txt");
    fs::write(&path, "left open by the parent\n").expect("write the inherited file");
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in the path");
    // SAFETY: open only, between fork and exec; the C string was made before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::open(c_path.as_ptr(), libc::O_RDONLY) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

fn stop_and_wait(project: &TestProject) {
    let stop = project.run_portguard(&["stop"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.describe());
    project
        .wait_until_no_process_left(Duration::from_secs(10))
        .unwrap_or_else(|left| panic!("still running after stop: {left:?}"));
}

#[test]
fn env_handoff_gives_the_server_only_the_standard_descriptors() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"env\"");
    let mut running = project.serve(&[]);
    ready(&project, &running);
    let pid = server_pid(&project, port);
    // fd 3 is the socket the server bound itself: the lowest free descriptor.
    assert_only_own_descriptors(pid, "env handoff");
    running.signal(Signal::TERM);
    assert_eq!(running.wait_exit(EXIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn socket_handoff_gives_the_server_the_socket_at_fd_3_and_nothing_else() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let mut running = project.serve(&[]);
    ready(&project, &running);
    let pid = server_pid(&project, port);
    assert_eq!(info(port)["socket_from_fd3"], true);
    assert_only_own_descriptors(pid, "socket handoff");
    running.signal(Signal::TERM);
    assert_eq!(running.wait_exit(EXIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn a_descriptor_portguards_parent_left_open_stops_at_portguard() {
    let project = TestProject::fixture();
    let port = project.set_metadata_on_free_port("handoff = \"socket\"");
    let mut running = start_background(with_inherited_file(&project, project.serve_safe(&[])));
    ready_port(&running, READY_TIMEOUT);
    let supervisor = running.pid();
    let inherited = descriptors(supervisor);
    assert!(
        inherited
            .values()
            .any(|target| target.ends_with("inherited.txt")),
        "the test's own file did not reach portguard, so this test proves nothing: {inherited:?}"
    );
    assert_only_own_descriptors(server_pid(&project, port), "an inherited file");
    stop_and_wait(&project);
    assert_eq!(running.wait_exit(EXIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn a_detached_server_does_not_get_the_report_pipe() {
    for handoff in ["env", "socket"] {
        let project = TestProject::fixture();
        project.set_metadata_on_free_port(&format!("handoff = \"{handoff}\""));
        let started = project.run_serve_safe(&["--detach"]);
        assert_eq!(started.code(), Some(0), "{}", started.describe());
        let port: u16 = started
            .stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("stdout is not a port: {:?}", started.stdout));
        let pid = server_pid(&project, port);
        // stdout and stderr are one pipe to the supervisor, which writes the instance's log
        // (and keeps it bounded): that is the only way the log reaches the server.
        let open = descriptors(pid);
        let pipe = open.get(&1).cloned().unwrap_or_default();
        assert!(pipe.starts_with("pipe:"), "{handoff}: {open:?}");
        assert_eq!(open.get(&2), Some(&pipe), "{handoff}: {open:?}");
        let supervisor = project.read_json(FIXTURE_INSTANCE).expect("a record")["supervisor_pid"]
            .as_u64()
            .expect("a supervisor pid") as u32;
        let held = descriptors(supervisor);
        assert!(
            held.values().any(|target| *target == pipe),
            "{handoff}: the supervisor does not read the server's output: {held:?}"
        );
        assert_only_own_descriptors(pid, &format!("--detach, {handoff} handoff"));
        stop_and_wait(&project);
    }
}

#[test]
fn each_replica_gets_the_one_socket_at_fd_3_and_nothing_else() {
    let project = TestProject::fixture();
    project.set_metadata_on_free_port("handoff = \"socket\"");
    let mut running = project.serve(&["--replicas", "2"]);
    ready_port(&running, READY_TIMEOUT);
    let mut replicas = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            replicas = project
                .read_json(FIXTURE_INSTANCE)
                .and_then(|record| {
                    record["replicas"].as_array().map(|list| {
                        list.iter()
                            .filter_map(|pid| pid.as_u64().map(|pid| pid as u32))
                            .collect::<Vec<_>>()
                    })
                })
                .unwrap_or_default();
            replicas.len() == 2
        }),
        "the record never listed 2 replicas: {replicas:?}"
    );
    let inodes: Vec<u64> = replicas
        .iter()
        .enumerate()
        .map(|(index, &pid)| assert_only_own_descriptors(pid, &format!("replica {index}")))
        .collect();
    assert_eq!(
        inodes[0], inodes[1],
        "the replicas listen on different sockets"
    );
    running.signal(Signal::TERM);
    assert_eq!(running.wait_exit(EXIT).and_then(|s| s.code()), Some(0));
}
